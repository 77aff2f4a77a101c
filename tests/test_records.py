"""Mailbox records: ids, file names, and each record's builder against its parser."""

import ast
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeswarm.hpc import records
from codeswarm.hpc.mailbox_io import StateStore
from codeswarm.protocol import event_errors

HPC_DIR = Path(records.__file__).parent

HOSTILE_IDS = [
    "",
    ".",
    "..",
    "../etc",
    "a/../b",
    "a/b",
    "a\\b",
    "/abs",
    ".hidden",
    "-rf",
    "a b",
    "a;b",
    "a|b",
    "a&b",
    "$(id)",
    "`id`",
    "a'b",
    'a"b',
    "a*",
    "a?",
    "a>b",
    "a\nb",
    "a\n",
    "a\x00b",
    "é",
    "x" * (records.ID_MAX_LENGTH + 1),
    5,
    None,
]


@pytest.mark.parametrize("value", HOSTILE_IDS)
def test_hostile_ids_are_rejected(value):
    assert records.id_problem(value) is not None
    with pytest.raises(records.RecordError):
        records.check_id(value)


@pytest.mark.parametrize(
    "value", ["272900", "local-3", "sw.7f3a_b", "A", "x" * records.ID_MAX_LENGTH]
)
def test_ordinary_ids_pass(value):
    assert records.id_problem(value) is None


@pytest.mark.parametrize("value", [-1, records.NODE_ID_MAX + 1, True, "0", 1.0, None])
def test_bad_node_ids(value):
    assert records.node_id_problem(value) is not None


@settings(max_examples=500)
@given(st.text(alphabet=st.characters(), max_size=40), st.integers(0, records.NODE_ID_MAX))
def test_node_key_round_trips_or_rejects(job_id, node_id):
    if records.id_problem(job_id):
        with pytest.raises(records.RecordError):
            records.node_key(job_id, node_id)
        return
    stem = records.node_key(job_id, node_id)
    assert "/" not in stem and ".." not in stem
    assert records.parse_node_key(stem) == (job_id, node_id)
    assert records.record_name(job_id, node_id) == stem + ".jsonl"


@pytest.mark.parametrize(
    "stem",
    [
        "272900",
        "272900_",
        "_0",
        "272900_x",
        "272900_01",
        "../x_0",
        "272900_0\n",
        "272900_\u00b2",  # superscript two: str.isdigit() says yes, int() says no
        "272900_\u0663",  # Arabic-Indic three: int() reads 3, but the file is not 272900_3
        "272900_" + "1" * 5000,  # more digits than int() converts
        "272900_100000",
    ],
)
def test_parse_node_key_rejects(stem):
    with pytest.raises(records.RecordError):
        records.parse_node_key(stem)


INBOX_CASES = [
    ({"type": "user", "injection_id": "i-1", "content": "hello"}, True),
    ({"type": "user", "injection_id": "i-1", "content": ""}, True),
    ({"type": "shutdown"}, True),
    ({"type": "interrupt"}, True),
    ({"type": "user", "injection_id": "../i", "content": "x"}, False),
    ({"type": "user", "injection_id": "i-1"}, False),
    ({"type": "user", "content": "x"}, False),
    ({"type": "user", "injection_id": "i-1", "content": 5}, False),
    ({"type": "reboot"}, False),
    ({}, False),
    ([], False),
    ("user", False),
]


@pytest.mark.parametrize(("record", "valid"), INBOX_CASES)
def test_the_worker_accepts_only_inbox_records_of_the_format(record, valid):
    line = json.dumps(record)
    if valid:
        assert records.parse_inbox_line(line) == record
    else:
        with pytest.raises(records.RecordError):
            records.parse_inbox_line(line)


def test_inbox_builders_produce_records_the_worker_accepts():
    for record in (
        records.inbox_user("inj-1", "say hi"),
        records.inbox_interrupt(),
        records.inbox_shutdown(),
    ):
        line = records.encode_line(record)
        assert line.endswith("\n") and line.count("\n") == 1
        assert records.parse_inbox_line(line) == record


@settings(max_examples=300)
@given(st.text())
def test_any_prompt_is_one_inbox_line_and_comes_back_whole(content):
    line = records.encode_line(records.inbox_user("inj-1", content)).encode("utf-8")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert records.parse_inbox_line(line.decode("utf-8"))["content"] == content


def _sample_fields(kind):
    values = {
        "pid": 123,
        "host": "n1",
        "injection_id": "inj-1",
        "turn_id": "t-1",
        "delta": "Hi",
        "content": "Hi there",
        "status": "completed",
        "input_tokens": 10,
        "cached_input_tokens": 0,
        "output_tokens": 3,
        "reasoning_output_tokens": 0,
        "total_tokens": 13,
        "error": {"inject_failed": "agent_crashed", "steer_failed": "no_running_turn"}.get(
            kind, "invalid_inbox_line"
        ),
        "approval_id": "ap-1",
        "approval_kind": "command",
        "expires_at": 1796173129.5,
        "decision": "accept",
        "by": "client",
        "steer_id": "st-1",
        "message": "codex exited",
        "reason": "sigterm",
        "item": {"id": "call_1", "kind": "command", "command": "ls", "cwd": "/w"},
        "item_id": "call_1",
        "diff": "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n",
        "plan": [{"step": "read", "status": "in_progress"}],
        "rate_limits": {"primary": {"usedPercent": 12, "windowDurationMins": 300}},
        "from_model": "gpt-a",
        "to_model": "gpt-b",
    }
    return {name: values[name] for name in records.OUTBOX_EVENT_FIELDS[kind]}


@pytest.mark.parametrize("kind", sorted(records.OUTBOX_EVENT_FIELDS))
def test_outbox_events_built_by_the_worker_round_trip_and_pass_the_router_schemas(kind):
    event = records.outbox_event(kind, "272900", 3, 17, **_sample_fields(kind))
    line = records.encode_line(event).encode("utf-8")
    assert records.parse_outbox_line(line) == event
    assert event_errors(event) == {}  # what the router passes on to its clients


@settings(max_examples=300)
@given(st.text(), st.integers(0, 2**63))
def test_any_delta_is_one_outbox_line_and_comes_back_whole(delta, seq):
    event = records.outbox_event("assistant_delta", "7", 0, seq, injection_id="i", delta=delta)
    line = records.encode_line(event).encode("utf-8")
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert records.parse_outbox_line(line) == event


@pytest.mark.parametrize("kind", sorted(records.OUTBOX_EVENT_FIELDS))
@pytest.mark.parametrize("drop", ["job_id", "node_id", "seq", "field"])
def test_outbox_events_missing_a_field_fail_both_sides(kind, drop):
    event = records.outbox_event(kind, "272900", 3, 17, **_sample_fields(kind))
    required = records.OUTBOX_EVENT_FIELDS[kind]
    if drop == "field":
        if not required:
            pytest.skip("no fields beyond the envelope")
        drop = required[0]
    del event[drop]
    with pytest.raises(records.RecordError, match=drop):
        records.parse_outbox_line(json.dumps(event))


@pytest.mark.parametrize(
    "line",
    [
        b"{nope",
        b"[]",
        b"\xff\xfe",
        b'{"type":"assistant","seq":1}',
        b"",
        records.encode_line(
            records.outbox_event("error", "7", 0, 1, error="e", message="m")
        ).encode("utf-16"),
    ],
)
def test_outbox_lines_that_are_no_event_are_refused(line):
    """Not even JSON in UTF-16: the router passes a line's bytes on to clients, as UTF-8."""
    with pytest.raises(records.RecordError):
        records.parse_outbox_line(line)


def test_outbox_event_refuses_unknown_types_and_missing_fields():
    with pytest.raises(records.RecordError):
        records.outbox_event("surprise", "1", 0, 0)
    with pytest.raises(records.RecordError):
        records.outbox_event("assistant_delta", "1", 0, 0, injection_id="i")


STATE_CASES = [
    (records.new_state(), True),
    ({**records.new_state(), "inbox_offset": 12, "thread_id": "t", "handled": ["a"]}, True),
    ({**records.new_state(), "in_flight": "inj-1", "next_seq": 4}, True),
    ({**records.new_state(), "inbox_offset": -1}, False),
    ({**records.new_state(), "inbox_offset": True}, False),
    ({**records.new_state(), "version": 3}, False),
    ({**records.new_state(), "approvals": {"ap-1": {"approval_kind": "command"}}}, True),
    ({**records.new_state(), "approvals": {"a b": {}}}, False),
    ({**records.new_state(), "next_approval": 0}, False),
    ({**records.new_state(), "handled": ["../x"]}, False),
    ({**records.new_state(), "in_flight": "a b"}, False),
    ({**records.new_state(), "thread_id": 5}, False),
    ({k: v for k, v in records.new_state().items() if k != "next_seq"}, False),
]


@pytest.mark.parametrize(("state", "valid"), STATE_CASES)
def test_state_check(state, valid):
    assert (records.state_problem(state) is None) == valid


def test_a_version_1_state_is_upgraded_with_no_pending_approvals(tmp_path):
    added = ("approvals", "next_approval", "read_offset")
    old = {k: v for k, v in records.new_state().items() if k not in added}
    old.update(version=1, inbox_offset=42, thread_id="t-1", handled=["a"], next_seq=9)
    path = tmp_path / "4242_0.json"
    path.write_text(json.dumps(old))

    state = StateStore(str(path)).load()

    assert state == {**old, "version": 2, "approvals": {}, "next_approval": 1, "read_offset": 42}
    assert records.pending_approvals(path.read_bytes()) == {}


def test_a_version_2_state_without_read_offset_reads_from_its_inbox_offset(tmp_path):
    old = {k: v for k, v in records.new_state().items() if k != "read_offset"}
    old.update(inbox_offset=42)
    path = tmp_path / "4242_0.json"
    path.write_text(json.dumps(old))

    assert StateStore(str(path)).load() == {**old, "read_offset": 42}
    assert records.pending_approvals(path.read_bytes()) == {}


def test_pending_approvals_refuses_a_damaged_state_file():
    with pytest.raises(records.RecordError):
        records.pending_approvals(b"{not json")
    with pytest.raises(records.RecordError):
        records.pending_approvals(json.dumps({**records.new_state(), "approvals": []}).encode())


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"approval_id": "ap-1", "decision": "maybe"}, "decision"),
        ({"approval_id": "a/b", "decision": "accept"}, "approval_id"),
        ({"approval_id": "ap-1", "decision": "accept", "request_id": ["x"]}, "request_id"),
    ],
)
def test_bad_approve_records_are_refused(record, problem):
    with pytest.raises(records.RecordError, match=problem):
        records.parse_inbox_line(json.dumps({"type": "approve", **record}))


def test_steer_review_and_compact_records_round_trip():
    for record in (
        records.inbox_steer("st-1", "go left", request_id=4),
        records.inbox_injection(records.INBOX_REVIEW, "rv-1", ""),
        records.inbox_injection(records.INBOX_COMPACT, "cp-1", ""),
        records.inbox_approve("ap-2", "accept_for_session", "r"),
    ):
        assert records.parse_inbox_line(records.encode_line(record)) == record
    with pytest.raises(records.RecordError):
        records.inbox_steer("st-1", "")
    with pytest.raises(records.RecordError):
        records.inbox_injection(records.INBOX_APPROVE, "x", "")


def test_hpc_is_standard_library_python_38():
    import sys

    local = {p.stem for p in HPC_DIR.glob("*.py")}
    for path in HPC_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(), feature_version=(3, 8))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top in local, f"{path.name} imports {name}"


def test_last_seq_reads_back_past_a_long_last_line(tmp_path):
    from codeswarm.hpc import mailbox_io

    path = tmp_path / "outbox.jsonl"
    writer = mailbox_io.OutboxWriter(str(path), "1", 0, 0)
    for n in range(100):
        writer.write("assistant", injection_id="i", content="x" * (10 if n < 99 else 300_000))
    writer.close()
    assert mailbox_io.last_seq([str(path), str(tmp_path / "missing.jsonl")]) == 99
