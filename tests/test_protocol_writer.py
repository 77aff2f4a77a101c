"""The daemon's output writer: one event that cannot be encoded never costs the others."""

import io
import json
import logging

from codeswarm.actors.protocol import ProtocolActor
from codeswarm.protocol import event_errors


def test_an_unencodable_event_is_replaced_by_an_error_and_the_rest_are_written(caplog):
    out = io.BytesIO()
    events = [
        {"type": "pong", "ts": 1.0, "request_id": "other-client"},
        {"type": "pong", "ts": 1.0, "request_id": "bad\udc80"},
        {
            "type": "assistant_delta",
            "ts": 1.0,
            "job_id": "1",
            "node_id": 0,
            "injection_id": "i1",
            "delta": float("nan"),
        },
        {"type": "pong", "ts": 1.0, "request_id": 7},
    ]
    with caplog.at_level(logging.ERROR):
        ProtocolActor(io.BytesIO(), out).write(events)
    written = [json.loads(line) for line in out.getvalue().decode("utf-8").splitlines()]
    assert [e["type"] for e in written] == ["pong", "error", "error", "pong"]
    assert (written[0]["request_id"], written[3]["request_id"]) == ("other-client", 7)
    assert {e["error"] for e in written[1:3]} == {"unencodable_event"}
    assert "request_id" not in written[1]
    assert written[2]["injection_id"] == "i1"
    assert all(event_errors(e) == {} for e in written)
    assert caplog.text.count("cannot encode") == 2
