"""The JSON Schema in docs/ is generated from the marshmallow schemas and must not go stale."""

from pathlib import Path

from codeswarm.protocol import jsonschema
from codeswarm.protocol.commands import COMMAND_SCHEMAS
from codeswarm.protocol.events import EVENT_SCHEMAS

DOC = Path(__file__).resolve().parents[1] / "docs" / "protocol.schema.json"


def test_committed_schema_is_current():
    assert DOC.read_text() == jsonschema.render(), (
        "docs/protocol.schema.json is stale: "
        "run `python -m codeswarm.protocol.jsonschema > docs/protocol.schema.json`"
    )


def test_schema_covers_every_command_and_event():
    defs = jsonschema.protocol_schema()["$defs"]
    assert set(defs["commands"]) == set(COMMAND_SCHEMAS)
    assert set(defs["events"]) == set(EVENT_SCHEMAS)
    inject = defs["commands"]["inject"]
    assert inject["required"] == ["content"]
    assert inject["additionalProperties"] is False
    assert defs["events"]["usage"]["properties"]["type"] == {"const": "usage"}
