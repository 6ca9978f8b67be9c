"""The Dockerfile and docker-compose.yml, read as a Docker engine would read them (none runs here):
images pinned, settings that exist and all of them wired, every named service used, no secret baked
in, the production shape (PostgreSQL, Kafka in KRaft mode reachable by the other containers, MinIO
with its bucket, migrate once, the API and scalable workers checked on /readyz)."""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from entrypoints.config import Settings, variables

ROOT = Path(__file__).resolve().parents[2]
PINNED = re.compile(r"^[\w./-]+:(?!latest$)[\w.-]*\d[\w.-]*$")  # a tag with a version in it
_INTERPOLATION = re.compile(r"\$\{(\w+)(:?-)([^}]*)\}")


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments), continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def interpolated(value: str) -> str:
    """``value`` as compose reads it with nothing set in the environment: each default applies."""
    return _INTERPOLATION.sub(lambda m: m.group(3), value).replace("$$", "$")


def test_the_dockerfile_is_multi_stage_slim_non_root_locked_and_runs_callrec() -> None:
    instructions = dockerfile()
    stages = [args for op, args in instructions if op == "FROM"]
    assert len(stages) >= 2
    names = set()
    for stage in stages:
        image, *alias = stage.split()
        assert PINNED.match(image) and "slim" in image, image
        names.update(alias[1:] if alias and alias[0].upper() == "AS" else [])
    for op, args in instructions:
        if op == "COPY" and "--from=" in args:
            assert re.search(r"--from=(\S+)", args).group(1) in names  # type: ignore[union-attr]
        if op == "RUN" and "uv sync" in args:
            assert "--frozen" in args and "--no-dev" in args  # exactly uv.lock's, no dev tools
        assert not re.search(r"(?i)(secret|token|password|_key)\s*=", args) or op not in ("ENV", "ARG")
    runtime = instructions[[i for i, (op, _) in enumerate(instructions) if op == "FROM"][-1] :]
    users = [args for op, args in runtime if op == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert ("ENTRYPOINT", '["callrec"]') in runtime
    assert not any(op == "COPY" and "tests" in args for op, args in instructions)
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in ignored and "!tests/" not in ignored and "!.env" not in ignored


def test_compose_names_pinned_images_and_uses_every_service_it_defines() -> None:
    services = compose()["services"]
    images = {name: s.get("image", "") for name, s in services.items()}
    built = {name for name, s in services.items() if "build" in s}
    for name, image in images.items():
        assert name in built or PINNED.match(image), f"{name}: {image!r} is not pinned"
    assert images["postgres"].startswith("postgres:16")
    assert images["kafka"].startswith("apache/kafka:") and images["minio"].startswith("minio/minio:")
    needed: set[str] = set()
    for service in services.values():
        needed.update(service.get("depends_on", {}))
    assert needed <= set(services)
    entry = {"api", "worker"}  # what an operator starts; everything else is needed by them
    assert set(services) == needed | entry
    assert set(compose().get("volumes", {})) == {
        v.split(":")[0]
        for s in services.values()
        for v in s.get("volumes", [])
        if not v.startswith((".", "/"))
    }


def test_compose_wires_every_setting_and_only_real_ones_and_they_parse() -> None:
    services = compose()["services"]
    known = set(variables())
    for name in ("migrate", "api", "worker"):
        env = {k: interpolated(str(v)) for k, v in services[name]["environment"].items()}
        ours = {k for k in env if k.startswith(("CALLREC_", "TWILIO_"))}
        assert ours <= known, f"{name} passes settings the service does not have: {ours - known}"
        assert known <= ours, f"{name} does not wire {known - ours}"
        settings = Settings.from_env({**env, "CALLREC_VAR_DIR": "/nonexistent-never-written"} | _secrets())
        assert settings.bus == "kafka" and settings.storage == "s3"
        assert (
            settings.database_url.startswith("postgresql+asyncpg://")
            and "@postgres:" in settings.database_url
        )
        assert settings.kafka_bootstrap == "kafka:9092" and settings.s3_endpoint_url == "http://minio:9000"
    assert services["worker"]["environment"]["CALLREC_METRICS_PORT"] == "9100"


def _secrets() -> dict[str, str]:
    """Generated secrets are written on first use: give them, so that parsing writes nothing."""
    return {name: "x" * 32 for name in variables() if name.endswith(("_SECRET", "_TOKEN", "_KEY"))}


def test_compose_runs_the_production_shape() -> None:
    services = compose()["services"]
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"] and "KAFKA_CONTROLLER_QUORUM_VOTERS" in kafka
    assert uuid.UUID(bytes=base64.urlsafe_b64decode(kafka["CLUSTER_ID"] + "=="))  # what KRaft formats with
    advertised = kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert "kafka:9092" in advertised and "//localhost:9092" not in advertised  # reachable by containers
    init = " ".join(services["minio-init"]["command"])
    assert "mc mb" in init and services["minio-init"]["restart"] == "no"
    assert services["migrate"]["command"] == ["migrate"]
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["minio-init"]["condition"] == "service_completed_successfully"
    assert "/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    assert services["api"]["command"][0] == "serve" and services["worker"]["command"] == ["worker"]
    assert "ports" not in services["worker"]  # so that --scale worker=N does not collide


@pytest.mark.parametrize("path", ["Dockerfile", "docker-compose.yml"])
def test_no_secret_value_is_baked_in(path: str) -> None:
    text = (ROOT / path).read_text()
    for name in (
        "CALLREC_JWT_SECRET",
        "CALLREC_SERVICE_TOKEN",
        "CALLREC_WEBHOOK_SECRET_KEY",
        "TWILIO_AUTH_TOKEN",
    ):
        for found in re.finditer(rf"{name}: \"(.*)\"", text):
            assert interpolated(found.group(1)) == "", f"{name} has a value in {path}"
