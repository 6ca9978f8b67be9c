"""The settings model: one declaration per variable, one boolean parser, masked secrets, the document."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from entrypoints import config
from entrypoints.config import Settings, parse_bool

ROOT = Path(__file__).resolve().parents[2]
NAME = re.compile(r"\b(?:CALLREC_[A-Z0-9_]*[A-Z0-9]|TWILIO_ACCOUNT_SID|TWILIO_AUTH_TOKEN)\b")
SECRETS = {
    "CALLREC_JWT_SECRET": "jwt_secret",
    "CALLREC_SERVICE_TOKEN": "service_token",
    "CALLREC_MEDIA_SIGNING_KEY": "media_signing_key",
    "CALLREC_WEBHOOK_SECRET_KEY": "webhook_secret_key",
    "TWILIO_AUTH_TOKEN": "twilio_auth_token",
}


def settings_from(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"CALLREC_VAR_DIR": str(tmp_path), **env})


def test_the_committed_configuration_document_is_generated_from_the_model() -> None:
    document = config.DOC.read_text()
    assert config.render(document) == document, "run: uv run python -m entrypoints.config --markdown"
    assert config.main(["--check"]) == 0


def test_every_documented_variable_is_declared_once_in_the_model() -> None:
    declared = set(config.variables())
    assert len(declared) == len(Settings.model_fields)  # one variable per field, none twice
    document = config.DOC.read_text()
    service_part, _, test_only = document.partition("## Test-only variables")
    test_only = test_only.partition("\n## ")[0]
    assert set(NAME.findall(service_part)) - declared == set()
    assert set(NAME.findall((ROOT / "docker-compose.yml").read_text())) - declared == set()
    assert {"CALLREC_FUZZ_EXAMPLES"} <= set(NAME.findall(test_only))


def test_every_variable_read_anywhere_is_in_the_model_or_documented_as_test_only() -> None:
    test_only = set(NAME.findall(config.DOC.read_text().partition("## Test-only variables")[2]))
    files = [ROOT / "README.md", ROOT / "docker-compose.yml", *(ROOT / "scripts").iterdir()]
    for folder in ("domain", "application", "adapters", "entrypoints", "tests", "bench", "docs"):
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in {".py", ".md", ".yml", ".toml"}]
    named = {name for path in files if path.is_file() for name in NAME.findall(path.read_text())}
    assert named - set(config.variables()) - test_only == set()


@pytest.mark.parametrize(
    ("spelling", "value"),
    [(word, True) for word in ("1", "true", "TRUE", "Yes", "on", " on ")]
    + [(word, False) for word in ("0", "false", "False", "NO", "off")],
)
def test_one_boolean_parser_for_every_boolean(tmp_path: Path, spelling: str, value: bool) -> None:
    assert parse_bool("X", spelling) is value
    settings = settings_from(
        tmp_path,
        CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS=spelling,
        CALLREC_ARCHIVE_RECHECK_SOURCE=spelling,
    )
    assert settings.webhook_allow_private_networks is value
    assert settings.archive_recheck_source is value


@pytest.mark.parametrize("name", ["CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "CALLREC_ARCHIVE_RECHECK_SOURCE"])
def test_an_unrecognised_boolean_stops_the_service_and_names_the_variable(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name} must be one of true/false"):
        settings_from(tmp_path, **{name: "maybe"})


def test_an_empty_boolean_is_its_default(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path, CALLREC_WEBHOOK_ALLOW_PRIVATE_NETWORKS="", CALLREC_ARCHIVE_RECHECK_SOURCE=""
    )
    assert (settings.webhook_allow_private_networks, settings.archive_recheck_source) == (False, True)


def test_the_defaults(tmp_path: Path) -> None:
    settings = Settings.from_env({"CALLREC_VAR_DIR": f"{tmp_path}/var/"})
    var = f"{tmp_path}/var"
    assert settings.database_url == f"sqlite+aiosqlite:///{var}/callrec.db"
    assert settings.storage_dir == Path(var) / "recordings"
    assert (settings.bus, settings.storage, settings.public_url) == (
        "inprocess",
        "filesystem",
        "http://127.0.0.1:8000",
    )
    assert (settings.twilio_account_sid, settings.twilio_auth_token) == ("", "")
    assert settings.platform_lines == {}
    assert (settings.playback_url_ttl, settings.webhook_url_ttl) == (timedelta(minutes=15), timedelta(days=1))
    assert (settings.max_body_bytes, settings.outbox_max_attempts, settings.relay_retry_base_s) == (
        1024 * 1024,
        10,
        1.0,
    )
    assert (settings.kafka_max_poll_interval_ms, settings.kafka_session_timeout_ms) == (300_000, 2_000)
    assert (settings.webhook_timeout_s, settings.webhook_poll_interval_s, settings.instant_hangup_s) == (
        15.0,
        1.0,
        3.0,
    )
    assert settings.scorability_wait_s == 0.0


def test_urls_lose_a_trailing_slash_and_empty_s3_values_are_unset(tmp_path: Path) -> None:
    settings = settings_from(
        tmp_path,
        CALLREC_PUBLIC_URL="https://calls.example.com/",
        CALLREC_TWILIO_API_BASE="http://127.0.0.1:9/",
        CALLREC_S3_ENDPOINT_URL="",
        CALLREC_S3_SSE="",
    )
    assert (settings.public_url, settings.twilio_api_base) == (
        "https://calls.example.com",
        "http://127.0.0.1:9",
    )
    assert (settings.s3_endpoint_url, settings.s3_sse) == (None, "AES256")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"CALLREC_PLAYBACK_URL_TTL_S": "0"},
            "CALLREC_PLAYBACK_URL_TTL_S must be between 1 and 3600 seconds",
        ),
        ({"CALLREC_WEBHOOK_TIMEOUT_S": "61"}, "CALLREC_WEBHOOK_TIMEOUT_S must be between 0.1 and 60 seconds"),
        ({"CALLREC_WEBHOOK_POLL_S": "0.01"}, "CALLREC_WEBHOOK_POLL_S must be between 0.05 and 60"),
        ({"CALLREC_INSTANT_HANGUP_S": "-1"}, "CALLREC_INSTANT_HANGUP_S must be between 0 and 60"),
        (
            {"CALLREC_RECONCILE_INTERVAL_S": "86401"},
            "CALLREC_RECONCILE_INTERVAL_S must be between 0 and 86400",
        ),
        ({"CALLREC_MAX_BODY_BYTES": "1.5"}, "CALLREC_MAX_BODY_BYTES must be an integer, not '1.5'"),
        ({"CALLREC_RELAY_LEASE_S": "soon"}, "CALLREC_RELAY_LEASE_S must be a number, not 'soon'"),
        ({"CALLREC_BUS": "rabbit"}, "CALLREC_BUS must be inprocess or kafka"),
        ({"CALLREC_STORAGE": "tape"}, "CALLREC_STORAGE must be filesystem or s3"),
        ({"CALLREC_PLATFORM_LINES": "sales=+15550001111"}, "CALLREC_PLATFORM_LINES"),
    ],
)
def test_bad_values_stop_the_service_with_a_message_naming_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        settings_from(tmp_path, **env)


def test_a_bad_setting_generates_no_secret(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        settings_from(tmp_path, CALLREC_BUS="rabbit")
    assert list(tmp_path.iterdir()) == []


def test_secrets_are_masked_when_printed_and_plain_where_used(tmp_path: Path) -> None:
    env = {name: f"plain-{name.lower()}" for name in SECRETS}
    settings = settings_from(tmp_path, **env)
    for name, attribute in SECRETS.items():
        assert getattr(settings, attribute) == env[name]
        assert env[name] not in repr(settings)
        assert env[name] not in str(settings)


def test_generated_secrets_are_kept_and_read_again(tmp_path: Path) -> None:
    first = settings_from(tmp_path / "var")
    again = settings_from(tmp_path / "var", CALLREC_JWT_SECRET="")
    for name, attribute in SECRETS.items():
        if name != "TWILIO_AUTH_TOKEN":
            assert getattr(first, attribute) == getattr(again, attribute)
            assert (tmp_path / "var" / attribute).read_text() == getattr(first, attribute)


def test_the_cli_overrides_a_setting_on_a_copy(tmp_path: Path) -> None:
    settings = settings_from(tmp_path)
    copy = settings.model_copy(update={"reconcile_stuck_after": timedelta(seconds=5)})
    assert (copy.reconcile_stuck_after, settings.reconcile_stuck_after) == (
        timedelta(seconds=5),
        timedelta(minutes=15),
    )
    with pytest.raises(ValueError):
        settings.bus = "kafka"
