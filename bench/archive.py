"""Archive a large recording from the local Twilio stand-in into a local S3 server, and compare.

    uv run python -m bench.archive --out bench/out/archive.json [--quick] [--size-mb 500]

``--quick`` archives 50 MiB instead of 500 MiB. The result (see ``bench/__main__.py``'s interface):
the service's archive throughput beside a raw streamed aioboto3 multipart upload of the same bytes
in the same run (goal: at least 0.9x), and the archive's peak RSS growth (goal: under 100 MB); the
other ways of moving the bytes are notes, and every run's raw figures go to
``bench/out/archive/results.json``. Without ``--quick`` one more archive run is sampled by py-spy
(``bench/out/archive/archive-profile.speedscope.json``; ``--no-profile`` skips it).

Starts a moto server (its own process) and the Twilio stand-in (a thread of this process, which
does nothing else meanwhile), puts one recording of ``--size-mb`` at the stand-in, then runs each
way of moving it into S3 in a fresh child process (so each one's peak RSS is its own) and reports
wall time, throughput and peak RSS:

* ``archive``: the service's own path, ``archive_recording`` with ``TwilioTelephony`` and
  ``S3RecordingStore``, verification included (docs/decisions/0014-archive-verification.md);
* ``raw-multipart-stream``: a bare aioboto3 multipart upload of the same download, same part size,
  one part at a time, no checksums, no verification;
* ``raw-multipart-memory``: a bare aioboto3 multipart upload of the same bytes already in memory
  (the S3 server's own ceiling; no download at all);
* ``naive``: download the whole recording into memory, then one ``PutObject``.

moto keeps objects in memory (about three times their size) and validates nothing; every object is
deleted after its run. Figures are from loopback on this machine, not from AWS.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import OUT as BENCH_OUT
from bench.common import ROOT, figure, relative, write_result

OUT = BENCH_OUT / "archive"

MODES = ("archive", "raw-multipart-stream", "raw-multipart-memory", "naive")
MIB = 1024 * 1024
BUCKET = "callrec-bench"


def bench_audio(seed: str, size: int) -> bytes:
    """Deterministic pseudo-audio of any size (``random.randbytes`` stops short of 256 MiB)."""
    import random

    rnd = random.Random(seed)
    block = 64 * MIB
    return b"".join(rnd.randbytes(min(block, size - offset)) for offset in range(0, size, block))


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of another process so far (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- the child: one way of moving the recording ---------------------------------------------------


async def _child(args: argparse.Namespace) -> dict[str, Any]:
    import aioboto3
    from aiobotocore.config import AioConfig

    from adapters.s3_store import S3RecordingStore
    from adapters.twilio_telephony import TwilioTelephony
    from tests.support.s3 import S3_CREDENTIALS

    session = aioboto3.Session(**S3_CREDENTIALS)
    config = AioConfig(
        region_name="us-east-1", s3={"addressing_style": "path"}, request_checksum_calculation="when_required"
    )
    key = f"bench/{args.mode}/{args.sid}.mp3"
    import tests.fakes  # noqa: F401  (imported before the clock starts)

    baseline = _rss_mb("VmRSS")
    phases: dict[str, float] = {}
    started = time.perf_counter()
    cpu = (_cpu_self(), _cpu_of(args.moto_pid))

    async with TwilioTelephony(args.account_sid, args.auth_token, api_base=args.standin) as telephony:
        if args.mode == "archive":
            phases, key = await _archive(args, telephony)
            started = time.perf_counter() - phases["total"]  # the handler's own time
        elif args.mode == "raw-multipart-stream":
            async with session.client("s3", endpoint_url=args.s3, config=config) as s3:
                upload = await s3.create_multipart_upload(Bucket=BUCKET, Key=key)
                parts, number, buffer = [], 0, bytearray()
                async with telephony.open_media(args.sid) as media:
                    async for chunk in media.chunks:
                        buffer += chunk
                        if len(buffer) >= args.part_size:
                            number += 1
                            body, buffer = bytes(buffer[: args.part_size]), buffer[args.part_size :]
                            r = await s3.upload_part(
                                Bucket=BUCKET,
                                Key=key,
                                UploadId=upload["UploadId"],
                                PartNumber=number,
                                Body=body,
                            )
                            parts.append({"PartNumber": number, "ETag": r["ETag"]})
                if buffer:
                    number += 1
                    r = await s3.upload_part(
                        Bucket=BUCKET,
                        Key=key,
                        UploadId=upload["UploadId"],
                        PartNumber=number,
                        Body=bytes(buffer),
                    )
                    parts.append({"PartNumber": number, "ETag": r["ETag"]})
                await s3.complete_multipart_upload(
                    Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
                )
        elif args.mode == "raw-multipart-memory":
            data = bench_audio(args.sid, args.size)
            baseline = _rss_mb("VmRSS")  # the bytes are the input here, not part of the upload's cost
            started = time.perf_counter()
            cpu = (_cpu_self(), _cpu_of(args.moto_pid))
            async with session.client("s3", endpoint_url=args.s3, config=config) as s3:
                upload = await s3.create_multipart_upload(Bucket=BUCKET, Key=key)
                parts = []
                for number, offset in enumerate(range(0, len(data), args.part_size), start=1):
                    r = await s3.upload_part(
                        Bucket=BUCKET,
                        Key=key,
                        UploadId=upload["UploadId"],
                        PartNumber=number,
                        Body=data[offset : offset + args.part_size],
                    )
                    parts.append({"PartNumber": number, "ETag": r["ETag"]})
                await s3.complete_multipart_upload(
                    Bucket=BUCKET, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
                )
        elif args.mode == "naive":
            async with telephony.open_media(args.sid) as media:
                data = b"".join([chunk async for chunk in media.chunks])
            phases["download"] = time.perf_counter() - started
            async with session.client("s3", endpoint_url=args.s3, config=config) as s3:
                await s3.put_object(Bucket=BUCKET, Key=key, Body=data)
            del data
        else:
            raise SystemExit(f"unknown mode {args.mode}")

    seconds = time.perf_counter() - started
    cpu_s = _cpu_self() - phases.pop("cpu_self_at_start", cpu[0])
    moto_cpu_s = _cpu_of(args.moto_pid) - phases.pop("cpu_moto_at_start", cpu[1])
    async with S3RecordingStore(BUCKET, endpoint_url=args.s3, session=session) as store:
        stored = await store.verify(key)  # outside the timing: only to check the bytes arrived whole
    assert stored is not None and stored.size == args.size, stored
    return {
        "mode": args.mode,
        "seconds": seconds,
        "mib_per_s": args.size / MIB / seconds,
        "baseline_rss_mb": baseline,
        "peak_rss_mb": _rss_mb("VmHWM"),
        "sha256": stored.sha256,
        "cpu_s": cpu_s,
        "moto_cpu_s": moto_cpu_s,
        "phases": phases,
        "key": key,
    }


async def _archive(args: argparse.Namespace, telephony: Any) -> tuple[dict[str, float], str]:
    """The service's own ``archive_recording`` on the real adapters (a throwaway SQLite database)."""
    import aioboto3

    from adapters.s3_store import S3RecordingStore
    from application.handlers import archive_recording, storage_key
    from domain import events
    from domain.model import Call, CallKind, Organization, Recording, RecordingStatus
    from tests.fakes import FakeClock, make_services
    from tests.support.database import Database, migrated_template
    from tests.support.s3 import S3_CREDENTIALS

    clock = FakeClock(datetime.now(UTC))
    org = Organization.create(id="bench", name="Bench", phone_numbers=[], greeting="Hi.", now=clock.now())
    call = Call.start(
        call_sid="CA" + "0" * 32,
        account_sid="AC" + "0" * 32,
        from_number="+1",
        to_number="+2",
        now=clock.now(),
        org=org,
    )
    recording = Recording(
        id="rec-bench",
        call_id=call.id,
        org_id="bench",
        kind=CallKind.CUSTOMER,
        call_sid="CA" + "0" * 32,
        status=RecordingStatus.COMPLETED,
        requested_at=clock.now(),
        call_started_at=clock.now(),
        recording_sid=args.sid,
    )
    scratch = tempfile.TemporaryDirectory(prefix="callrec-bench-")
    db = Database(await asyncio.to_thread(migrated_template, Path(scratch.name) / "bench.db"))
    async with db.unit_of_work() as uow:
        uow.calls.add(call)
        uow.recordings.add(recording)
        await uow.commit()
    phases: dict[str, float] = {}

    class TimedStore(S3RecordingStore):
        async def put(self, *a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await super().put(*a, **kw)
            finally:
                phases["stream_to_s3"] = time.perf_counter() - t0

    store = TimedStore(
        BUCKET,
        endpoint_url=args.s3,
        session=aioboto3.Session(**S3_CREDENTIALS),
        part_size=args.part_size,
        multipart_threshold=args.part_size,
        upload_concurrency=args.concurrency,
    )
    async with store:
        services = make_services(db=db, telephony=telephony, store=store, clock=clock)
        event = events.RecordingCompletedAtTwilio(
            occurred_at=clock.now(),
            org_id="bench",
            recording_id=recording.id,
            call_id=recording.call_id,
            recording_sid=args.sid,
            duration_s=None,
        )
        phases["cpu_self_at_start"], phases["cpu_moto_at_start"] = _cpu_self(), _cpu_of(args.moto_pid)
        t0 = time.perf_counter()
        await archive_recording(event, services)
        phases["total"] = time.perf_counter() - t0
        phases["after_the_upload"] = phases["total"] - phases["stream_to_s3"]
    archived = await db.recording(recording.id)
    await db.dispose()
    scratch.cleanup()
    assert archived.status == RecordingStatus.ARCHIVED and archived.audio is not None
    return phases, storage_key(archived)


# --- the parent: servers, runs, result ------------------------------------------------------------


PY_SPY = Path(sys.executable).with_name("py-spy")
PROFILE = OUT / "archive-profile.speedscope.json"


def _run_child(mode: str, common: list[str], *, profile: bool = False) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.archive", "--child", mode, *common]
    if profile:  # sampled by py-spy, an extra run whose timing is not used
        command = [str(PY_SPY), "record", "--format", "speedscope", "-o", str(PROFILE), "--", *command]
    out = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} failed:\n{out.stderr[-4000:]}")
    *_, last = (line for line in out.stdout.splitlines() if line.startswith("{"))  # py-spy talks too
    result: dict[str, Any] = json.loads(last)
    return result


def _figure(
    name: str,
    value: float,
    unit: str,
    goal: str | None,
    met: bool | None,
    baseline: tuple[str, float, str] | None = None,
) -> dict[str, Any]:
    rounded = None if baseline is None else (baseline[0], round(baseline[1], 1), baseline[2])
    return figure(name, round(value, 1), unit, goal=goal, met=met, baseline=rounded)


def _total_cpu(run: dict[str, Any]) -> float:
    return float(run["cpu_s"] + run["moto_cpu_s"] + run["standin_cpu_s"])


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: float(r["mib_per_s"]))[len(runs) // 2]


def _result(results: list[dict[str, Any]], args: argparse.Namespace, expected_sha: str) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        runs.setdefault(r["mode"], []).append(r)
    by_mode = {mode: _median_run(rs) for mode, rs in runs.items()}
    ours, raw = by_mode["archive"], by_mode["raw-multipart-stream"]
    ratio = ours["mib_per_s"] / raw["mib_per_s"]
    growth = max(r["peak_rss_mb"] - r["baseline_rss_mb"] for r in runs["archive"])
    pairs = [
        a["mib_per_s"] / b["mib_per_s"]
        for a, b in zip(runs["archive"], runs["raw-multipart-stream"], strict=True)
    ]
    figures = [
        _figure(
            f"archive of one {args.size_mb} MiB recording into S3 (moto), verification included",
            ours["mib_per_s"],
            "MiB/s",
            ">= 0.9x the raw streamed multipart upload",
            ratio >= 0.9,
            ("raw aioboto3 multipart upload streamed from the stand-in", raw["mib_per_s"], "MiB/s"),
        ),
        _figure(
            "CPU of every process involved (archiver, moto, stand-in), median",
            statistics.median(_total_cpu(r) for r in runs["archive"]),
            "s",
            None,
            None,
            (
                "the same for the raw streamed upload",
                statistics.median(_total_cpu(r) for r in runs["raw-multipart-stream"]),
                "s",
            ),
        ),
        _figure(
            "peak RSS growth of the archiving process",
            growth,
            "MiB",
            "< 100 MB",
            growth * MIB < 100e6,
        ),
    ]
    names = {
        "archive": "service archive_recording",
        "raw-multipart-stream": "raw aioboto3 multipart streamed from the stand-in (one part at a time)",
        "raw-multipart-memory": "raw aioboto3 multipart of bytes already in memory",
        "naive": "naive: download whole, then one PutObject",
    }
    notes = [
        f"One {args.size_mb} MiB recording served by the Twilio stand-in (a thread of the otherwise idle "
        "parent) and stored in a moto S3 server (its own process), both on loopback; each way of moving "
        "it ran in a fresh child process, so each peak RSS is that process's own. "
        f"Parts of {args.part_size // MIB} MiB, {args.concurrency} in flight for the service. "
        f"{os.cpu_count()} CPUs (1-minute load {os.getloadavg()[0]:.1f}), Python "
        f"{platform.python_version()}.",
        f"The archive and the raw streamed upload ran {args.repeat} times each, alternately (the machine "
        "is shared: a burst of other work slows whichever runs then); figures are medians, and the "
        "ratios of each archive to the raw upload right after it were "
        + ", ".join(f"{x:.2f}" for x in pairs)
        + ". Peak RSS growth is the largest of the archive runs.",
    ]
    for mode in MODES:
        r = by_mode[mode]
        intact = "intact" if all(x["sha256"] == expected_sha for x in runs[mode]) else "NOT INTACT"
        phases = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(r["phases"].items()))
        notes.append(
            f"{names[mode]}: {r['seconds']:.2f} s, {r['mib_per_s']:.0f} MiB/s, CPU {r['cpu_s']:.2f} s "
            f"(moto {r['moto_cpu_s']:.2f} s, stand-in {r['standin_cpu_s']:.2f} s), peak RSS "
            f"{r['peak_rss_mb']:.0f} MiB (from {r['baseline_rss_mb']:.0f} MiB), bytes {intact}"
            + (f"; phases: {phases}" if phases else "")
        )
    notes.append(
        "moto is one Python process that keeps every object in memory; on AWS the upload is network-bound "
        "and part concurrency matters more. The naive way is quick here because moto handles one big "
        "request faster than many parts; its memory grows with the recording."
    )
    OUT.mkdir(parents=True, exist_ok=True)
    raw_path = OUT / "results.json"
    raw_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return {
        "figures": figures,
        "notes": notes,
        "artefacts": [relative(path) for path in (raw_path, PROFILE) if path.exists()],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--out", type=Path, help="where to write the JSON result")
    parser.add_argument("--quick", action="store_true", help="50 MiB instead of 500 MiB")
    parser.add_argument("--size-mb", type=int, default=None)
    parser.add_argument("--part-size-mb", type=int, default=8)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--repeat", type=int, default=None, help="archive and raw upload runs each (3; 1 with --quick)"
    )
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one more archive run under py-spy (default: on, off with --quick)",
    )
    parser.add_argument("--modes", default=",".join(MODES), help=argparse.SUPPRESS)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--standin", help=argparse.SUPPRESS)
    parser.add_argument("--s3", help=argparse.SUPPRESS)
    parser.add_argument("--sid", help=argparse.SUPPRESS)
    parser.add_argument("--account-sid", help=argparse.SUPPRESS)
    parser.add_argument("--auth-token", help=argparse.SUPPRESS)
    parser.add_argument("--moto-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.size_mb is None:
        args.size_mb = 50 if args.quick else 500
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.profile is None:
        args.profile = not args.quick
    args.size = args.size_mb * MIB
    args.part_size = args.part_size_mb * MIB

    if args.child:
        args.mode = args.child
        print(json.dumps(asyncio.run(_child(args))))
        return
    if args.out is None:
        parser.error("--out is required")

    from tests.support.s3 import moto_server_process, sync_client
    from tests.twilio_standin import TwilioStandin, new_sid

    modes = [m for m in args.modes.split(",") if m]
    PROFILE.unlink(missing_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix="callrec-bench-") as tmp,
        moto_server_process(Path(tmp) / "moto.log") as moto,
    ):
        # The stand-in serves from this (otherwise idle) process; the children do the measured work.
        standin = TwilioStandin()
        standin.start()
        try:
            s3 = sync_client(moto.endpoint_url)
            s3.create_bucket(Bucket=BUCKET)
            sid = new_sid("RE")
            audio = bench_audio(sid, args.size)
            standin.add_recording(new_sid("CA"), sid=sid, status="completed", audio=audio)
            expected_sha = hashlib.sha256(audio).hexdigest()
            del audio
            common = [
                f"--size-mb={args.size_mb}",
                f"--part-size-mb={args.part_size_mb}",
                f"--concurrency={args.concurrency}",
                f"--standin={standin.base_url}",
                f"--s3={moto.endpoint_url}",
                f"--sid={sid}",
                f"--account-sid={standin.account_sid}",
                f"--auth-token={standin.auth_token}",
                f"--moto-pid={moto.pid}",
            ]
            results = []
            order = [m for m in modes if m in ("archive", "raw-multipart-stream")] * args.repeat + [
                m for m in modes if m not in ("archive", "raw-multipart-stream")
            ]
            for mode in order:
                print(f"running {mode} ...", file=sys.stderr, flush=True)
                parent_cpu = _cpu_self()
                result = _run_child(mode, common)
                result["standin_cpu_s"] = _cpu_self() - parent_cpu
                print(
                    f"  {result['seconds']:.2f} s, {result['mib_per_s']:.0f} MiB/s, "
                    f"peak RSS {result['peak_rss_mb']:.0f} MiB",
                    file=sys.stderr,
                    flush=True,
                )
                s3.delete_object(Bucket=BUCKET, Key=result["key"])
                results.append(result)
            if args.profile and "archive" in modes and PY_SPY.exists():
                print("profiling archive ...", file=sys.stderr, flush=True)
                OUT.mkdir(parents=True, exist_ok=True)
                s3.delete_object(Bucket=BUCKET, Key=_run_child("archive", common, profile=True)["key"])
        finally:
            standin.stop()
    if set(modes) != set(MODES) or not results:
        print(json.dumps(results, indent=2))
        return
    write_result(args.out, "archive", **_result(results, args, expected_sha))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
