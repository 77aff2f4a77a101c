"""hpc.follower_wire: the header and the record stream, each encoder against its parser."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeswarm.hpc import follower_wire, records
from codeswarm.hpc.follower_wire import RecordReader

job_ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)
node_keys = st.builds(records.node_key, job_ids, st.integers(0, records.NODE_ID_MAX))
identities = st.builds(lambda key, inode: f"{key}:{inode}", node_keys, st.integers(0, 2**64))
huge = st.integers(0, 2**80)


@settings(max_examples=300)
@given(st.dictionaries(identities, huge, max_size=20), st.lists(st.text()), st.booleans())
def test_header_round_trips(cursor, jobs, from_end):
    line = follower_wire.encode_header(cursor, jobs, from_end)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert follower_wire.parse_header(line) == (cursor, set(jobs), from_end)


@pytest.mark.parametrize("line", [b"\n", b"  \n", b"{}\n"])
def test_an_empty_header_follows_everything_from_the_start(line):
    assert follower_wire.parse_header(line) == ({}, set(), False)


@pytest.mark.parametrize(
    ("line", "complaint"),
    [
        (b"{nope\n", "not valid JSON"),
        (b"\xff\n", "not valid JSON"),
        (b"[]\n", "JSON object"),
        (b'{"cursor": []}\n', "cursor must be an object"),
        (b'{"cursor": null}\n', "cursor must be an object"),
        (b'{"cursor": {"no-inode": 3}}\n', "cursor key"),
        (b'{"cursor": {"42_0:x": 3}}\n', "cursor key"),
        (b'{"cursor": {"../x_0:1": 3}}\n', "cursor key"),
        (b'{"cursor": {"42_0:1": -1}}\n', "non-negative"),
        (b'{"cursor": {"42_0:1": true}}\n', "non-negative"),
        (b'{"cursor": {"42_0:1": 1.5}}\n', "non-negative"),
        (b'{"jobs": "42"}\n', "jobs"),
        (b'{"jobs": [42]}\n', "jobs"),
        (b'{"from_end": 1}\n', "from_end"),
    ],
)
def test_bad_headers_say_what_is_wrong(line, complaint):
    with pytest.raises(follower_wire.HeaderError, match=complaint):
        follower_wire.parse_header(line)


# An outbox line is any bytes but a newline: the follower cuts lines at newlines.
outbox_lines = st.lists(st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"\t")), max_size=30)


@settings(max_examples=300)
@given(
    st.lists(st.tuples(node_keys, st.integers(0, 2**64), huge, outbox_lines), max_size=5),
    st.lists(st.text(max_size=40), max_size=3),
    st.data(),
)
def test_records_cut_anywhere_parse_back_to_what_was_encoded(files, messages, data):
    stream = b""
    expected = []
    for key, inode, start, lines in files:
        identity = f"{key}:{inode}"
        chunk = b"".join(line + b"\n" for line in lines)
        stream += b"".join(follower_wire.line_records(key, identity, start, chunk, len(chunk)))
        stream += follower_wire.heartbeat_record(1_800_000_000.25)
        offset = start
        for line in lines:
            offset += len(line) + 1
            expected.append((key, identity, offset, line))
    for message in messages:
        stream += follower_wire.problem_record(message)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = RecordReader()
    got_lines, got_problems = [], []
    for begin, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        lines, problems = reader.feed(stream[begin:end])
        got_lines += lines
        got_problems += problems
    assert got_lines == expected
    assert got_problems == [m.replace("\n", " ") for m in messages]


def test_only_whole_lines_of_a_read_become_records():
    data = b'{"seq":0}\n{"seq":1}\n{"seq":2'
    out = follower_wire.line_records("42_0", "42_0:7", 100, data, data.rfind(b"\n") + 1)
    assert out == [b'L\t42_0\t42_0:7\t110\t{"seq":0}\n', b'L\t42_0\t42_0:7\t120\t{"seq":1}\n']
    assert follower_wire.line_records("42_0", "42_0:7", 100, data, 0) == []


def test_a_record_waits_for_its_newline():
    reader = RecordReader()
    assert reader.feed(b"L\t42_0\t42_0:7\t10\t{}") == ([], [])
    assert reader.feed(b"\n") == ([("42_0", "42_0:7", 10, b"{}")], [])


@pytest.mark.parametrize(
    "record",
    [b"L\t42_0\t42_0:7\tten\t{}", b"L\t42_0\t42_0:7", b"L\t\xff\t42_0:7\t10\t{}", b"X", b"L"],
)
def test_unknown_or_broken_records_are_reported(record):
    lines, problems = RecordReader().feed(record + b"\n")
    assert lines == []
    assert len(problems) == 1 and problems[0].startswith("unknown follower record")
