"""docs/events.md stays the catalogue of what is really published."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec

from adapters.kafka.topics import KafkaTopics
from domain.events import EVENT_TYPES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "events.md").read_text()
ENVELOPE_FIELDS = {"id", "type", "occurred_at", "org_id", "aggregate_id", "data"}


def sections() -> dict[str, str]:
    parts = re.split(r"^### (\w+)\n", DOC, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_every_event_type_is_in_the_catalogue_with_its_topic_fields_and_an_example() -> None:
    found = sections()
    assert set(EVENT_TYPES) <= set(found), f"missing from docs/events.md: {set(EVENT_TYPES) - set(found)}"
    topics = KafkaTopics()
    for name, event_type in EVENT_TYPES.items():
        text = found[name]
        assert f"Topic `{topics.for_event_type(name)}`" in text, name
        own = {f.name for f in msgspec.structs.fields(event_type)} - {"id", "occurred_at", "org_id"}
        documented = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
        assert documented == own, f"{name}: documented {documented}, the event has {own}"
        example = json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))  # type: ignore[union-attr]
        assert set(example) == ENVELOPE_FIELDS and example["type"] == name
        assert set(example["data"]) == own
        event = msgspec.convert(
            {
                **example["data"],
                "id": example["id"],
                "occurred_at": example["occurred_at"],
                "org_id": example["org_id"],
            },
            event_type,
        )
        assert event.aggregate_id == example["aggregate_id"]


def test_the_example_consumer_is_valid_python() -> None:
    code = re.search(r'```python\n(""".*?)\n```', DOC, re.S)
    assert code is not None
    compile(code.group(1), "docs/events.md", "exec")
