"""Settings of the S3 store, the archive's verification, retries and the sweep; the store's choice."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from adapters.filesystem_store import FilesystemRecordingStore
from adapters.s3_store import S3RecordingStore
from entrypoints.config import Settings
from entrypoints.container import Container


def settings_from(tmp_path: Path, **env: str) -> Settings:
    base = {
        "CALLREC_VAR_DIR": str(tmp_path),
        "CALLREC_JWT_SECRET": "j" * 32,
        "CALLREC_SERVICE_TOKEN": "s" * 32,
        "CALLREC_MEDIA_SIGNING_KEY": "m" * 32,
    }
    return Settings.from_env({**base, **env})


def test_the_defaults_are_aes256_15_minute_playback_24_hour_webhooks_and_a_15_minute_sweep(
    tmp_path: Path,
) -> None:
    settings = settings_from(tmp_path)

    assert (settings.storage, settings.s3_sse, settings.s3_kms_key_id) == ("filesystem", "AES256", None)
    assert settings.playback_url_ttl == timedelta(minutes=15)
    assert settings.service_settings.webhook_url_ttl == timedelta(hours=24)
    assert settings.service_settings.recheck_source_audio is True
    assert (settings.reconcile_interval_s, settings.reconcile_stuck_after) == (300, timedelta(minutes=15))
    assert settings.s3_part_size == settings.s3_multipart_threshold == 8 * 1024 * 1024


def test_a_kms_key_id_means_kms_encryption(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, CALLREC_S3_KMS_KEY_ID="alias/recordings")

    assert (settings.s3_sse, settings.s3_kms_key_id) == ("aws:kms", "alias/recordings")


@pytest.mark.parametrize(
    "env",
    [
        {"CALLREC_STORAGE": "s3"},  # no bucket
        {"CALLREC_S3_SSE": "none"},
        {"CALLREC_S3_SSE": "AES256", "CALLREC_S3_KMS_KEY_ID": "k"},
        {"CALLREC_S3_PART_SIZE_MB": "4"},
        {"CALLREC_PLAYBACK_URL_TTL_S": "3601"},  # playback URLs live at most an hour
        {"CALLREC_WEBHOOK_URL_TTL_S": str(7 * 24 * 3600 + 1)},  # SigV4's 7 days
        {"CALLREC_RECONCILE_STUCK_AFTER_S": "0"},
    ],
)
def test_settings_that_cannot_work_stop_the_service_at_start(tmp_path: Path, env: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        settings_from(tmp_path, **env)


def test_the_container_builds_the_store_callrec_storage_names(tmp_path: Path) -> None:
    filesystem = Container(settings=settings_from(tmp_path))
    s3 = Container(
        settings=settings_from(
            tmp_path,
            CALLREC_STORAGE="s3",
            CALLREC_S3_BUCKET="recordings",
            CALLREC_S3_PLATFORM_BUCKET="platform-recordings",
            CALLREC_S3_ENDPOINT_URL="http://127.0.0.1:9",
        )
    )

    assert isinstance(filesystem.store(), FilesystemRecordingStore)
    store = s3.store()
    assert isinstance(store, S3RecordingStore)
    assert (store.bucket, store.platform_bucket, store.endpoint_url) == (
        "recordings",
        "platform-recordings",
        "http://127.0.0.1:9",
    )
    assert store.locate("platform/support/x.mp3") == ("platform-recordings", "platform/support/x.mp3")
    assert store.locate("orgs/acme/x.mp3") == ("recordings", "orgs/acme/x.mp3")
