"""The line codec: every command decodes, every bad line becomes the right error event."""

import dataclasses
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
    encode_events,
    event_errors,
)
from codeswarm.protocol.codec import EXCERPT_CHARS, MAX_LINE_BYTES, EncodedEvent, routed
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
    # A trailing newline must not slip past a pattern anchored with "$".
    ('{"command":"launch","nodes":2,"time":"01:00\\n"}', "invalid_field", "time"),
    ('{"command":"launch","nodes":2,"partition":"gpu\\n"}', "invalid_field", "partition"),
    ('{"command":"status","swarm_id":"s1\\n"}', "invalid_field", "swarm_id"),
    ('{"command":"inject","job_id":"1\\n","nodes":0,"content":"x"}', "invalid_field", "job_id"),
    (
        '{"command":"inject","job_id":"1","nodes":0,"content":"x","injection_id":"i\\n"}',
        "invalid_field",
        "injection_id",
    ),
]

SURROGATE = "\udc80"
# One valid command of each shape, every string field it can carry filled in.
VALID_COMMANDS = {
    "inject": {
        "command": "inject",
        "swarm_id": "s1",
        "nodes": "all",
        "content": "hello",
        "injection_id": "i1",
        "request_id": "r1",
    },
    "inject-by-job": {
        "action": "inject",
        "job_id": "272900",
        "node_id": 0,
        "content": "hello",
        "request_id": "r1",
    },
    "interrupt": {"command": "interrupt", "swarm_id": "s1", "nodes": "all", "request_id": "r1"},
    "interrupt-by-job": {"action": "interrupt", "job_id": "1", "nodes": [0], "request_id": "r1"},
    "launch": {
        "command": "launch",
        "nodes": 2,
        "prompt": "You are a distributed agent.",
        "time": "01:00:00",
        "partition": "gpu",
        "request_id": "r1",
    },
    "list": {"command": "list", "request_id": "r1"},
    "status": {"command": "status", "swarm_id": "s1", "request_id": "r1"},
    "terminate": {"action": "terminate", "swarm_id": "s1", "request_id": "r1"},
    "ping": {"command": "ping", "action": "ping", "request_id": "r1"},
    "shutdown": {"command": "shutdown", "request_id": "r1"},
}
STRING_FIELDS = [
    (name, field)
    for name, command in VALID_COMMANDS.items()
    for field, value in command.items()
    if isinstance(value, str)
]
SURROGATE_LINES = [
    (
        json.dumps({**VALID_COMMANDS[name], field: VALID_COMMANDS[name][field] + SURROGATE}),
        "invalid_field",
        field,
    )
    for name, field in STRING_FIELDS
] + [
    ('{"command":"ping","request_id":"\\ud800"}', "invalid_field", "request_id"),
    ('{"command":"ping","request_id":"\\udc00\\ud800"}', "invalid_field", "request_id"),
    ('{"command":"ping","request_id":["\\udc80"]}', "invalid_field", "request_id.0"),
    ('{"command":"ping","request_id":{"a":["x","\\udc80"]}}', "invalid_field", "request_id.a.1"),
    ('{"command":"ping","request_id":{"\\udc80":1}}', "invalid_field", "request_id.\\udc80"),
    ('{"command":"ping","\\udc80":1}', "invalid_field", "\\udc80"),
    ('{"command":"inject","job_id":"1","nodes":["\\udc80"]}', "invalid_field", "nodes.0"),
    ('{"command":"\\udc80"}', "invalid_field", "command"),
]


@pytest.mark.parametrize(("line", "code", "field"), BAD_LINES + SURROGATE_LINES)
def test_bad_line_maps_to_error_code(line, code, field):
    event = decode_line(line)
    assert isinstance(event, dict), event
    assert event["type"] == "error"
    assert event["error"] == code
    assert event.get("field") == field
    assert len(event["line"]) <= EXCERPT_CHARS + 3
    assert event_errors(event) == {}
    encode_event(event)


def test_a_lone_surrogate_is_named_and_the_request_id_still_echoed():
    line = json.dumps({**VALID_COMMANDS["inject"], "content": "ab" + SURROGATE})
    event = decode_line(line)
    assert (event["error"], event["field"]) == ("invalid_field", "content")
    assert event["request_id"] == "r1"
    assert "lone surrogate" in event["message"] and "U+DC80" in event["message"]


def test_a_surrogate_request_id_is_not_echoed():
    event = decode_line('{"command":"ping","request_id":"r\\udc80"}')
    assert event["field"] == "request_id" and "request_id" not in event


def test_an_escaped_surrogate_pair_is_one_character_and_accepted():
    line = '{"command":"inject","job_id":"1","nodes":0,"content":"\\ud83d\\ude80"}'
    assert decode_line(line).content == "\U0001f680"


def test_a_decoded_line_with_a_raw_lone_surrogate_is_refused_and_its_excerpt_escaped():
    event = decode_line('{"command":"ping","request_id":"' + SURROGATE + '"}')
    assert event["field"] == "request_id"
    assert "\\udc80" in event["line"]
    encode_event(event)


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


def test_encode_event_is_one_utf8_line_and_round_trips():
    event = {"type": "assistant_delta", "ts": 1.5, "delta": "a\nb \u2028 é", "job_id": "1"}
    line = encode_event(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line.decode("utf-8")) == event


@pytest.mark.parametrize(
    "value", ["a" + SURROGATE, float("nan"), float("inf"), object(), {1, 2}], ids=repr
)
def test_encode_event_refuses_what_json_lines_cannot_carry(value):
    with pytest.raises((TypeError, ValueError)):
        encode_event({"type": "assistant_delta", "delta": value})


def test_encode_events_replaces_only_the_unencodable_event():
    good = {"type": "pong", "ts": 1.0, "request_id": "a"}
    bad = {
        "type": "assistant_delta",
        "ts": 1.0,
        "delta": SURROGATE,
        "request_id": "b",
        "swarm_id": "s1",
        "job_id": "1",
        "node_id": 0,
        "injection_id": "i1",
        "seq": 3,
    }
    data, problems = encode_events([good, bad, {**good, "request_id": "c"}])
    first, error, last = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert (first, last) == (good, {**good, "request_id": "c"})
    assert error["type"] == "error" and error["error"] == "unencodable_event"
    assert "assistant_delta" in error["message"] and "surrogate" in error["message"]
    kept = ("request_id", "swarm_id", "job_id", "node_id", "injection_id")
    assert {key: error[key] for key in kept} == {key: bad[key] for key in kept}
    assert event_errors(error) == {}
    assert len(problems) == 1 and "assistant_delta" in problems[0]


def test_encode_events_leaves_out_correlation_fields_it_cannot_encode():
    data, problems = encode_events([{"type": "pong", "ts": 1.0, "request_id": SURROGATE}])
    (error,) = [json.loads(line) for line in data.decode("utf-8").splitlines()]
    assert error["error"] == "unencodable_event" and "request_id" not in error
    assert len(problems) == 1


# Text with lone surrogates in it, as a JSON line carries them ("\udc80"), as well as without.
ANY_CHARACTER = st.characters(exclude_categories=()) | st.characters(categories=["Cs"])
TEXT = st.text() | st.text(ANY_CHARACTER)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT,
    lambda children: st.lists(children) | st.dictionaries(TEXT, children),
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
    """An error event that can be sent, or a command whose every string can be encoded."""
    result = decode_line(line)
    if isinstance(result, dict):
        assert result["type"] == "error"
        assert event_errors(result) == {}
        encode_event(result)
    else:
        json.dumps(dataclasses.asdict(result), ensure_ascii=False).encode("utf-8")


@settings(max_examples=3000, deadline=None)
@given(st.text(max_size=300) | st.text(ANY_CHARACTER, max_size=300))
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


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(STRING_FIELDS), st.characters(categories=["Cs"]), st.data())
def test_a_lone_surrogate_in_any_string_field_of_any_command_is_refused(case, surrogate, data):
    name, field = case
    command = dict(VALID_COMMANDS[name])
    at = data.draw(st.integers(0, len(command[field])))
    command[field] = command[field][:at] + surrogate + command[field][at:]
    event = decode_line(json.dumps(command))
    assert isinstance(event, dict), event
    assert (event["error"], event["field"]) == ("invalid_field", field)
    assert event.get("request_id") == (None if field == "request_id" else "r1")
    assert event_errors(event) == {}
    encode_event(event)


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


# ---- a worker's line passed on with fields spliced in --------------------------------------

IDS = st.tuples(st.text(max_size=20) | st.none(), st.none() | st.integers() | st.text(max_size=20))


@settings(max_examples=1000, deadline=None)
@given(st.dictionaries(TEXT, JSON_VALUES, min_size=1, max_size=5), IDS, st.booleans())
def test_a_passed_on_line_says_what_encoding_the_event_would_say(fields, ids, compact):
    """Whatever the worker's line holds, the client reads the event the router routed."""
    fields.pop("swarm_id", None)
    fields.pop("request_id", None)
    decoded = {"type": "assistant_delta", **fields}
    separators = (",", ":") if compact else (", ", ": ")
    try:
        raw = json.dumps(decoded, ensure_ascii=not compact, separators=separators).encode()
    except UnicodeEncodeError:  # a lone surrogate: a worker writes it escaped
        raw = json.dumps(decoded, separators=separators).encode()
    swarm_id, request_id = ids
    event = routed(raw, json.loads(raw), swarm_id, request_id)
    added = {"swarm_id": swarm_id, **({} if request_id is None else {"request_id": request_id})}
    assert event == {**decoded, **added}
    data, problems = encode_events([event])
    try:
        expected = encode_event({**decoded, **added})
    except ValueError:  # a lone surrogate: the event is refused however it is encoded
        assert not isinstance(event, EncodedEvent)
        assert json.loads(data)["error"] == "unencodable_event" and problems
        return
    assert data.endswith(b"\n") and data.count(b"\n") == 1 and problems == []
    assert json.loads(data) == json.loads(expected)
    if compact and isinstance(event, EncodedEvent):
        assert data == expected  # the worker's own encoding: byte for byte the same


@pytest.mark.parametrize(
    "raw",
    [
        b'{"type":"assistant_delta","delta":NaN}',
        b'{"type":"assistant_delta","delta":-Infinity}',
        b'{"type":"assistant_delta","delta":"\\udc80"}',
        b'{"type":"assistant_delta","delta":"\\uD800"}',
        b'{"type":"assistant_delta","swarm_id":"forged"}',
        b'{"type":"assistant_delta"} ',
    ],
    ids=["nan", "infinity", "surrogate", "upper-case surrogate", "replaced field", "trailing"],
)
def test_a_line_the_encoder_would_refuse_or_change_is_encoded_again(raw):
    event = routed(raw, json.loads(raw), "sw-1", None)
    assert not isinstance(event, EncodedEvent) and event["swarm_id"] == "sw-1"
    data, problems = encode_events([event])
    sent = json.loads(data)
    assert sent["swarm_id"] == "sw-1"
    assert (sent["type"] == "error") == bool(problems)


def test_passed_on_and_encoded_events_keep_their_order_in_one_batch():
    raw = b'{"type":"assistant_delta","delta":"a"}'
    spliced = routed(raw, json.loads(raw), "s", 1)
    plain = {"type": "pong", "ts": 1.0}
    refused = {"type": "pong", "ts": 1.0, "request_id": "x" + SURROGATE}
    data, problems = encode_events([spliced, plain, refused, spliced])
    lines = [json.loads(line) for line in data.splitlines()]
    assert [e["type"] for e in lines] == ["assistant_delta", "pong", "error", "assistant_delta"]
    assert (
        lines[0]
        == lines[3]
        == {"type": "assistant_delta", "delta": "a", "swarm_id": "s", "request_id": 1}
    )
    assert len(problems) == 1


def test_ids_that_compare_equal_keep_their_own_encoding():
    """The spliced ids are remembered: 1 and True are equal keys, but not the same JSON."""
    raw = b'{"type":"assistant_delta","delta":"a"}'
    sent = [
        json.loads(encode_events([routed(raw, json.loads(raw), "s", value)])[0])["request_id"]
        for value in (1, True, 1)
    ]
    assert [type(value) for value in sent] == [int, bool, int]
