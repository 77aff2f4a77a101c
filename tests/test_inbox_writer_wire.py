"""hpc.inbox_writer_wire: framed requests and one-line replies, each encoder against its parser."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codeswarm.hpc import inbox_writer_wire as wire

tokens = st.from_regex(r"[!-~]{1,20}", fullmatch=True)  # printable ASCII, no space


@settings(max_examples=300)
@given(st.lists(st.tuples(tokens, tokens, st.binary(max_size=200)), max_size=10))
def test_requests_read_back_exactly_whatever_bytes_they_carry(requests):
    stream = io.BytesIO(b"".join(wire.encode_request(*request) for request in requests))
    for request in requests:
        assert wire.read_request(stream) == request
    assert wire.read_request(stream) is None


@pytest.mark.parametrize(
    ("request_id", "key"), [("", "42_0"), ("a b", "42_0"), ("1", "42_0\n"), ("1", "é_0")]
)
def test_ids_that_would_break_the_framing_are_refused(request_id, key):
    with pytest.raises(wire.FrameError):
        wire.encode_request(request_id, key, b"{}\n")


UNREADABLE_HEADERS = [
    b"garbage\n",
    b"1 42_0\n",
    b"1 42_0 5 6\n",
    b"1 42_0 -5\n",
    b"1 42_0 +5\n",
    b"1 42_0 5_0\n",
    b"1 42_0 0x10\n",
    b"\xff 42_0 1\n",
]


@pytest.mark.parametrize("header", UNREADABLE_HEADERS)
def test_an_unreadable_header_is_a_frame_error(header):
    with pytest.raises(wire.FrameError):
        wire.read_request(io.BytesIO(header + b"x" * 20))


def test_a_request_cut_short_reads_as_the_end():
    assert wire.read_request(io.BytesIO(b"1 42_0 400\n" + b'{"type":"user"')) is None


@settings(max_examples=300)
@given(tokens, st.one_of(st.none(), st.text()))
def test_replies_round_trip(request_id, error):
    line = wire.encode_reply(request_id, error)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    expected = None if error is None else error.replace("\n", " ") or "error"
    assert wire.parse_reply(line) == (request_id, expected)
    assert wire.parse_reply(line[:-1]) == (request_id, expected)


@settings(max_examples=200)
@given(st.lists(st.tuples(tokens, tokens, st.binary(max_size=100)), min_size=1, max_size=10))
def test_a_batch_reads_back_as_its_requests_and_a_lone_request_as_one(requests):
    frames = [wire.encode_request(*request) for request in requests]
    stream = io.BytesIO(wire.encode_batch(frames) + frames[0])
    assert wire.read_requests(stream) == requests
    assert wire.read_requests(stream) == requests[:1]
    assert wire.read_requests(stream) is None


def test_a_batch_count_that_is_not_a_number_is_a_frame_error():
    with pytest.raises(wire.FrameError):
        wire.read_requests(io.BytesIO(b"batch x\n"))
