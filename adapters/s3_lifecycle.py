"""The recordings' S3 lifecycle: to Glacier Instant Retrieval after N days (``callrec storage
apply-lifecycle``; docs/storage.md has the cost and the same JSON for Terraform).

Glacier Instant Retrieval serves the same ``GetObject`` and presigned URLs in milliseconds, so
playback does not change. The rules cover only the service's own prefixes (``orgs/``, ``platform/``)
and are merged into whatever lifecycle rules the bucket already has (matched by ``ID``), so a shared
bucket keeps its other rules.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from adapters.s3_store import S3RecordingStore

RECORDING_PREFIXES = ("orgs/", "platform/")
RULE_ID_PREFIX = "callrec-recordings-"
ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS = 1
NONCURRENT_VERSIONS_EXPIRE_AFTER_DAYS = 30


def lifecycle_rules(days: int = 30) -> list[dict[str, Any]]:
    """One rule per prefix: current versions to GLACIER_IR after ``days``; incomplete multipart
    uploads aborted after a day; superseded versions (a retried archive rewrites its key) expire."""
    if not 1 <= days <= 36500:
        raise ValueError("days must be between 1 and 36500")
    return [
        {
            "ID": f"{RULE_ID_PREFIX}{prefix.rstrip('/')}",
            "Status": "Enabled",
            "Filter": {"Prefix": prefix},
            "Transitions": [{"Days": days, "StorageClass": "GLACIER_IR"}],
            "NoncurrentVersionExpiration": {"NoncurrentDays": NONCURRENT_VERSIONS_EXPIRE_AFTER_DAYS},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_INCOMPLETE_UPLOADS_AFTER_DAYS},
        }
        for prefix in RECORDING_PREFIXES
    ]


async def current_rules(s3: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        answer = await s3.get_bucket_lifecycle_configuration(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchLifecycleConfiguration":
            return []
        raise
    rules: list[dict[str, Any]] = answer.get("Rules", [])
    return rules


async def apply_lifecycle(store: S3RecordingStore, days: int = 30) -> dict[str, list[dict[str, Any]]]:
    """Put the rules on the store's bucket(s), keeping their other rules; returns each bucket's rules
    as S3 reads them back afterwards."""
    ours = lifecycle_rules(days)
    s3 = await store._s3()
    applied = {}
    for bucket in dict.fromkeys(b for b in (store.bucket, store.platform_bucket) if b):
        others = [
            r for r in await current_rules(s3, bucket) if not r.get("ID", "").startswith(RULE_ID_PREFIX)
        ]
        await s3.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [*others, *ours]}
        )
        applied[bucket] = await current_rules(s3, bucket)
    return applied
