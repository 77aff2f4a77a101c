"""Subscriptions: the filter, the ``subscribe`` command, and where each applies it."""

import io
import json
import re
from pathlib import Path

import pytest

from codeswarm.actors.messages import Emit
from codeswarm.actors.protocol import ProtocolActor
from codeswarm.embed import EventQueue
from codeswarm.protocol import Subscribe, decode_line, event_errors
from codeswarm.protocol.events import EVENT_SCHEMAS
from codeswarm.protocol.subscription import (
    ANSWER_TYPES,
    DEFAULT_PATTERNS,
    EVENT_TYPES,
    HIGH_VOLUME_TYPES,
    Subscription,
    pattern_problem,
)


def event(kind, **fields):
    return {"type": kind, "ts": 1.0, **fields}


def passed(subscription, kinds):
    return [kind for kind in kinds if subscription.wants(event(kind))]


def test_the_default_is_every_type_but_the_command_and_reasoning_deltas():
    default = Subscription()
    assert set(HIGH_VOLUME_TYPES) == {"command_output_delta", "reasoning_delta"}
    assert passed(default, EVENT_TYPES) == [t for t in EVENT_TYPES if t not in HIGH_VOLUME_TYPES]
    assert default.resolved() == list(DEFAULT_PATTERNS)
    assert default.wants(event("assistant_delta"))


def test_every_event_type_is_known_once_and_answers_are_event_types():
    assert set(EVENT_SCHEMAS) <= set(EVENT_TYPES)
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES)
    assert set(EVENT_TYPES) >= ANSWER_TYPES
    assert {"item_started", "item_completed", "plan_updated", "approval_request"} <= set(
        EVENT_TYPES
    )


def test_globs_select_by_type_and_answers_always_pass():
    items = Subscription(["item_*", "assistant"])
    assert items.resolved() == ["assistant", "item_started", "item_completed"]
    assert passed(items, ["item_started", "item_completed", "assistant", "assistant_delta"]) == [
        "item_started",
        "item_completed",
        "assistant",
    ]
    assert passed(items, ["turn_started", "usage", "node_started", "command_output_delta"]) == []
    assert passed(items, sorted(ANSWER_TYPES)) == sorted(ANSWER_TYPES)


def test_an_empty_subscription_keeps_only_answers():
    nothing = Subscription([])
    assert nothing.resolved() == []
    assert passed(nothing, EVENT_TYPES) == [t for t in EVENT_TYPES if t in ANSWER_TYPES]


def test_a_type_unknown_today_is_matched_by_its_glob():
    subscription = Subscription(["item_*"])
    assert subscription.wants(event("item_updated"))
    assert not Subscription().wants(event("brand_new_delta"))
    assert Subscription(["*"]).wants(event("brand_new_delta"))


def test_select_keeps_order():
    events = [event("assistant", n=1), event("usage"), event("assistant", n=2), event("pong")]
    assert Subscription(["assistant"]).select(events) == [events[0], events[2], events[3]]


@pytest.mark.parametrize("pattern", ["*", "turn_?omplete", "*_delta", "[ai]*", "usage"])
def test_patterns_that_match_a_type_are_accepted(pattern):
    assert pattern_problem(pattern) is None


def test_a_pattern_that_matches_nothing_says_which_and_lists_the_types():
    problem = pattern_problem("turn_finished")
    assert problem is not None
    assert problem.startswith("'turn_finished' matches no event type; known types: ready, ")
    assert "command_output_delta" in problem
    assert pattern_problem("") is not None
    assert pattern_problem("Assistant") is not None  # types are matched case-sensitively
    with pytest.raises(ValueError, match="'nope\\*' matches no event type"):
        Subscription.checked(["assistant", "nope*"])


def test_the_subscribe_command_decodes_with_its_patterns():
    command = decode_line(
        b'{"command":"subscribe","events":["item_*","turn_complete"],"request_id":3}'
    )
    assert command == Subscribe(events=("item_*", "turn_complete"), request_id=3)
    assert decode_line(b'{"command":"subscribe","events":[]}') == Subscribe(events=())


@pytest.mark.parametrize(
    ("line", "code", "field", "says"),
    [
        ('{"command":"subscribe","events":["tool_*"]}', "invalid_field", "events", "'tool_*'"),
        ('{"command":"subscribe","events":"assistant"}', "invalid_field", "events", "list"),
        ('{"command":"subscribe","events":[7]}', "invalid_field", "events.0", "string"),
        ('{"command":"subscribe","events":[""]}', "invalid_field", "events.0", "Length"),
        ('{"command":"subscribe"}', "missing_field", "events", "events"),
    ],
)
def test_a_bad_subscribe_is_an_error_naming_the_problem(line, code, field, says):
    error = decode_line(line.replace("}", ',"request_id":"s"}', 1))
    assert isinstance(error, dict)
    assert (error["error"], error["field"], error["request_id"]) == (code, field, "s")
    assert says in error["message"]
    assert event_errors(error) == {}


def written(out: io.BytesIO) -> list[dict]:
    return [json.loads(line) for line in out.getvalue().decode().splitlines()]


def test_the_protocol_actor_filters_from_the_first_line_and_answers_subscribe():
    out = io.BytesIO()
    actor = ProtocolActor(io.BytesIO(), out)
    stream = [event("command_output_delta"), event("assistant"), event("usage"), event("pong")]
    actor.on_receive(Emit(stream))
    assert [e["type"] for e in written(out)] == ["assistant", "usage", "pong"]

    out.seek(0)
    out.truncate()
    actor.on_receive(Subscribe(events=("command_*", "usage"), request_id="sub"))
    actor.on_receive(Emit(stream))
    answer, *rest = written(out)
    assert answer["type"] == "subscribed" and answer["request_id"] == "sub"
    assert answer["patterns"] == ["command_*", "usage"]
    assert answer["events"] == ["usage", "command_output_delta"]
    assert event_errors(answer) == {}
    assert [e["type"] for e in rest] == ["command_output_delta", "usage", "pong"]


def test_the_embedded_queue_keeps_subscribed_events_and_waiters_get_every_answer():
    sink = EventQueue()
    waiter = sink.expect("r1")
    sink.subscription = Subscription(["assistant"])
    sink.tell(
        Emit(
            [
                event("turn_started", request_id="r1"),
                event("assistant", request_id="r1"),
                event("inject_ack", request_id="r1"),
                event("usage"),
            ]
        )
    )
    assert [sink.events.get_nowait()["type"] for _ in range(sink.events.qsize())] == [
        "assistant",
        "inject_ack",
    ]
    assert [waiter.get_nowait()["type"] for _ in range(waiter.qsize())] == [
        "turn_started",
        "assistant",
        "inject_ack",
    ]


def test_the_protocol_page_lists_every_event_type_and_the_answers():
    page = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()
    section = page.split("## Subscriptions", 1)[1].split("\n## ", 1)[0]
    table = section.split("| group | types |", 1)[1]
    assert sorted(re.findall(r"`([a-z_]+)`", table)) == sorted(EVENT_TYPES)
    answers = section.split("**Answers always come**", 1)[1].split(". ", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", answers)) == ANSWER_TYPES
    example = Subscription(["item_*", "plan_updated"]).resolved()
    assert f'"events":{json.dumps(example, separators=(",", ":"))}' in section
