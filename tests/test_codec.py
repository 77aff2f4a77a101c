"""The line codec: every command decodes, every bad line becomes the right error event."""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeswarm.protocol import (
    Inject,
    Interrupt,
    Launch,
    ListSwarms,
    Ping,
    Shutdown,
    Status,
    Terminate,
    decode_line,
    encode_event,
    event_errors,
)
from codeswarm.protocol.codec import EXCERPT_CHARS, MAX_LINE_BYTES
from codeswarm.protocol.fields import MAX_CONTENT_CHARS

SEED_INJECT_BY_JOB = '{"action":"inject","job_id":"272900","node_id":0,"content":"Hello"}'
SEED_INJECT_BY_SWARM = '{"command":"inject","swarm_id":"<id>","nodes":0,"content":"Hello"}'


def test_seed_inject_by_job_is_accepted_verbatim():
    assert decode_line(SEED_INJECT_BY_JOB) == Inject(content="Hello", nodes=(0,), job_id="272900")


def test_seed_inject_by_swarm_is_accepted_with_a_real_swarm_id():
    # The seed writes a placeholder; "<" and ">" are shell metacharacters, so a real id replaces it.
    line = SEED_INJECT_BY_SWARM.replace("<id>", "sw-7f3a")
    assert decode_line(line) == Inject(content="Hello", nodes=(0,), swarm_id="sw-7f3a")


def test_placeholder_swarm_id_is_rejected_as_hostile():
    event = decode_line(SEED_INJECT_BY_SWARM)
    assert event["error"] == "invalid_field" and event["field"] == "swarm_id"


COMMAND_CASES = [
    (
        {"command": "inject", "swarm_id": "s1", "nodes": [0, 2], "content": "x"},
        Inject(content="x", nodes=(0, 2), swarm_id="s1"),
    ),
    (
        {"command": "inject", "swarm_id": "s1", "nodes": "all", "content": "x"},
        Inject(content="x", nodes="all", swarm_id="s1"),
    ),
    (
        {
            "action": "inject",
            "job_id": "42",
            "nodes": 3,
            "content": "x",
            "injection_id": "retry-1",
            "request_id": "r9",
        },
        Inject(content="x", nodes=(3,), job_id="42", injection_id="retry-1", request_id="r9"),
    ),
    (
        {"command": "interrupt", "swarm_id": "s1", "nodes": "all"},
        Interrupt(nodes="all", swarm_id="s1"),
    ),
    (
        {"command": "launch", "nodes": 4, "prompt": "You are a distributed agent."},
        Launch(nodes=4, prompt="You are a distributed agent."),
    ),
    (
        {"command": "launch", "nodes": 1, "time": "00:30:00", "partition": "gpu"},
        Launch(nodes=1, time="00:30:00", partition="gpu"),
    ),
    ({"command": "list", "request_id": 7}, ListSwarms(request_id=7)),
    ({"command": "status", "swarm_id": "s1"}, Status(swarm_id="s1")),
    ({"action": "terminate", "swarm_id": "s1"}, Terminate(swarm_id="s1")),
    ({"command": "ping"}, Ping()),
    ({"command": "shutdown", "action": "shutdown"}, Shutdown()),
]


@pytest.mark.parametrize(("line", "command"), COMMAND_CASES)
def test_every_command_decodes(line, command):
    assert decode_line(json.dumps(line)) == command
    assert decode_line(json.dumps(line).encode()) == command


BAD_LINES = [
    ("", "invalid_json", None),
    ("{", "invalid_json", None),
    ('{"command":"ping"} trailing', "invalid_json", None),
    ('{"command":"ping","x":NaN}', "invalid_json", None),
    ("[" * 100_000 + "]" * 100_000, "invalid_json", None),
    (b"\xff\xfe{}", "invalid_encoding", None),
    ("[]", "not_an_object", None),
    ('"inject"', "not_an_object", None),
    ("null", "not_an_object", None),
    ("{}", "missing_field", "command"),
    ('{"content":"hi"}', "missing_field", "command"),
    ('{"command":"rm -rf /"}', "unknown_command", "command"),
    ('{"command":["inject"]}', "unknown_command", "command"),
    ('{"command":"inject","action":"ping"}', "invalid_field", "command"),
    ('{"command":"inject","job_id":"1","node_id":0}', "missing_field", "content"),
    ('{"command":"status"}', "missing_field", "swarm_id"),
    ('{"command":"launch"}', "missing_field", "nodes"),
    ('{"command":"inject","job_id":"1","node_id":0,"content":""}', "invalid_field", "content"),
    ('{"command":"inject","job_id":"1","node_id":0,"content":5}', "invalid_field", "content"),
    ('{"command":"inject","job_id":"1","content":"x"}', "invalid_field", "nodes"),
    ('{"command":"inject","node_id":0,"content":"x"}', "invalid_field", "swarm_id"),
    (
        '{"command":"inject","job_id":"1","swarm_id":"s","nodes":0,"content":"x"}',
        "invalid_field",
        "swarm_id",
    ),
    (
        '{"command":"inject","job_id":"1","node_id":0,"nodes":0,"content":"x"}',
        "invalid_field",
        "nodes",
    ),
    (
        '{"command":"inject","job_id":"../../etc","node_id":0,"content":"x"}',
        "invalid_field",
        "job_id",
    ),
    (
        '{"command":"inject","job_id":"1;reboot","node_id":0,"content":"x"}',
        "invalid_field",
        "job_id",
    ),
    ('{"command":"inject","job_id":"$(id)","node_id":0,"content":"x"}', "invalid_field", "job_id"),
    ('{"command":"inject","job_id":"1","node_id":-1,"content":"x"}', "invalid_field", "node_id"),
    ('{"command":"inject","job_id":"1","node_id":true,"content":"x"}', "invalid_field", "node_id"),
    ('{"command":"inject","job_id":"1","node_id":"0","content":"x"}', "invalid_field", "node_id"),
    ('{"command":"inject","job_id":"1","nodes":[],"content":"x"}', "invalid_field", "nodes"),
    ('{"command":"inject","job_id":"1","nodes":[1,1],"content":"x"}', "invalid_field", "nodes"),
    ('{"command":"inject","job_id":"1","nodes":"some","content":"x"}', "invalid_field", "nodes"),
    (
        '{"command":"inject","job_id":"1","nodes":0,"content":"x","injection_id":"a/b"}',
        "invalid_field",
        "injection_id",
    ),
    (
        '{"command":"inject","job_id":"1","nodes":0,"content":"x","contnet":"y"}',
        "invalid_field",
        "contnet",
    ),
    ('{"command":"launch","nodes":0}', "invalid_field", "nodes"),
    ('{"command":"launch","nodes":"4"}', "invalid_field", "nodes"),
    ('{"command":"launch","nodes":2,"time":"1h; rm"}', "invalid_field", "time"),
    ('{"command":"ping","request_id":{"a":1}}', "invalid_field", "request_id"),
]


@pytest.mark.parametrize(("line", "code", "field"), BAD_LINES)
def test_bad_line_maps_to_error_code(line, code, field):
    event = decode_line(line)
    assert isinstance(event, dict), event
    assert event["type"] == "error"
    assert event["error"] == code
    assert event.get("field") == field
    assert len(event["line"]) <= EXCERPT_CHARS + 3
    assert event_errors(event) == {}


def test_error_echoes_a_valid_request_id():
    event = decode_line('{"command":"status","request_id":"r-1"}')
    assert event["error"] == "missing_field" and event["request_id"] == "r-1"


def test_line_too_long_is_refused_before_parsing():
    line = b'{"command":"inject","content":"' + b"a" * MAX_LINE_BYTES + b'"}'
    event = decode_line(line)
    assert event["error"] == "line_too_long"
    assert len(event["line"]) <= EXCERPT_CHARS + 3


def test_oversized_content_is_an_invalid_field():
    line = json.dumps(
        {"command": "inject", "job_id": "1", "node_id": 0, "content": "x" * (MAX_CONTENT_CHARS + 1)}
    )
    assert decode_line(line)["field"] == "content"


def test_hostile_content_is_kept_byte_exact():
    content = "quotes \" ' `ls` $(rm -rf ~) \\n\n\ttab; é 漢字 🚀 \x00"
    line = json.dumps({"command": "inject", "job_id": "1", "node_id": 0, "content": content})
    assert decode_line(line).content == content


def test_encode_event_is_one_line_and_round_trips():
    event = {"type": "assistant_delta", "ts": 1.5, "delta": "a\nb \u2028 é", "job_id": "1"}
    line = encode_event(event)
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == event


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
VERBISH = st.sampled_from(["inject", "launch", "status", "ping", "list", "interrupt", "nope"])
COMMANDISH = st.fixed_dictionaries(
    {"command": VERBISH},
    optional={
        "job_id": JSON_VALUES,
        "swarm_id": JSON_VALUES,
        "node_id": JSON_VALUES,
        "nodes": JSON_VALUES,
        "content": JSON_VALUES,
        "request_id": JSON_VALUES,
    },
)


def _decodes_cleanly(line):
    result = decode_line(line)
    if isinstance(result, dict):
        assert result["type"] == "error"
        assert event_errors(result) == {}
        encode_event(result)


@settings(max_examples=3000, deadline=None)
@given(st.text(max_size=300))
def test_arbitrary_text_never_raises(text):
    _decodes_cleanly(text)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data):
    _decodes_cleanly(data)


@settings(max_examples=500, deadline=None)
@given(JSON_VALUES)
def test_arbitrary_json_never_raises(value):
    _decodes_cleanly(json.dumps(value))


@settings(max_examples=500, deadline=None)
@given(COMMANDISH)
def test_command_shaped_objects_never_raise(value):
    _decodes_cleanly(json.dumps(value))


def _mutate(rng: random.Random, line: bytes) -> bytes:
    """Damage a valid line the ways real input gets damaged."""
    how = rng.randrange(6)
    if how == 0:
        return line[: rng.randrange(len(line))]
    if how == 1:
        i = rng.randrange(len(line))
        return line[:i] + bytes([rng.randrange(256)]) + line[i + 1 :]
    if how == 2:
        i = rng.randrange(len(line))
        return line[:i] + line[i + 1 :]
    if how == 3:
        i = rng.randrange(len(line))
        return line[:i] + rng.choice([b'"', b"{", b"}", b",", b":", b"\\", b"\x00"]) + line[i:]
    if how == 4:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80)))
    return line.replace(b"0", rng.choice([b"-1", b"true", b'"0"', b"[]", b"1e999"]))


def test_ten_thousand_random_and_malformed_lines_decode_without_exception():
    rng = random.Random(20261130)
    seeds = [line.encode() for line in (SEED_INJECT_BY_JOB, SEED_INJECT_BY_SWARM)]
    seeds += [json.dumps(line).encode() for line, _ in COMMAND_CASES]
    outcomes = {"command": 0, "error": 0}
    for _ in range(10_000):
        result = decode_line(_mutate(rng, rng.choice(seeds)))
        if isinstance(result, dict):
            assert result["type"] == "error" and event_errors(result) == {}
            outcomes["error"] += 1
        else:
            outcomes["command"] += 1
    assert sum(outcomes.values()) == 10_000
    assert outcomes["error"] > 5_000 and outcomes["command"] > 100
