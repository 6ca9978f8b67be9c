"""The recordings' lifecycle configuration is accepted by an S3 server and reads back as applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from adapters.s3_lifecycle import apply_lifecycle, lifecycle_rules
from tests.support.s3 import MotoServer, s3_store_on

OPERATORS_RULE = {
    "ID": "expire-tmp",
    "Status": "Enabled",
    "Filter": {"Prefix": "tmp/"},
    "Expiration": {"Days": 1},
}


def by_id(rules: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {rule["ID"]: rule for rule in rules}


async def test_recordings_move_to_glacier_ir_after_the_days_given(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    async with s3_store_on(moto_server.endpoint_url, s3_bucket) as store:
        applied = await apply_lifecycle(store, days=45)

    rules = by_id(applied[s3_bucket])
    assert set(rules) == {"callrec-recordings-orgs", "callrec-recordings-platform"}
    for rule in rules.values():
        assert rule["Status"] == "Enabled"
        assert rule["Transitions"] == [{"Days": 45, "StorageClass": "GLACIER_IR"}]
        assert rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}
    assert rules["callrec-recordings-orgs"]["Filter"] == {"Prefix": "orgs/"}


async def test_applying_again_replaces_our_rules_and_keeps_the_buckets_other_rules(
    moto_server: MotoServer, s3_bucket: str, s3_client: Any
) -> None:
    s3_client.put_bucket_lifecycle_configuration(
        Bucket=s3_bucket, LifecycleConfiguration={"Rules": [OPERATORS_RULE]}
    )
    async with s3_store_on(moto_server.endpoint_url, s3_bucket) as store:
        await apply_lifecycle(store, days=30)
        await apply_lifecycle(store, days=60)

    rules = by_id(s3_client.get_bucket_lifecycle_configuration(Bucket=s3_bucket)["Rules"])
    assert set(rules) == {"expire-tmp", "callrec-recordings-orgs", "callrec-recordings-platform"}
    assert rules["callrec-recordings-orgs"]["Transitions"][0]["Days"] == 60
    assert rules["expire-tmp"]["Expiration"] == {"Days": 1}


@pytest.mark.parametrize("days", [0, -3])
def test_a_lifecycle_of_no_days_is_refused(days: int) -> None:
    with pytest.raises(ValueError, match="days"):
        lifecycle_rules(days)


def test_the_documented_rules_are_the_ones_applied() -> None:
    storage_doc = (Path(__file__).resolve().parents[2] / "docs" / "storage.md").read_text()
    section = storage_doc.partition("## Cheaper storage")[2]
    block = section.partition("```json\n")[2].partition("```")[0]
    assert json.loads(block) == {"Rules": lifecycle_rules(30)}
