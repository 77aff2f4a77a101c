"""The event log: cursors, segments, trimming, crash leftovers, and reading it back."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from codeswarm import eventlog
from codeswarm.eventlog import EventLog, LogTail, swarm_log_dir
from codeswarm.protocol import make_event
from codeswarm.protocol.codec import routed
from codeswarm.protocol.since import Since, parse_since


def node_event(swarm_id: str, seq: int, node_id: int = 0, kind: str = "assistant_delta") -> dict:
    return make_event(
        kind,
        swarm_id=swarm_id,
        job_id="j1",
        node_id=node_id,
        seq=seq,
        injection_id="i1",
        delta=f"d{seq}",
    )


def read_all(state: Path, swarm_id: str, since: Since = eventlog.START) -> list[dict]:
    return list(LogTail(swarm_log_dir(state, swarm_id), since).poll())


def test_events_get_a_cursor_per_swarm_and_are_read_back_as_sent(tmp_path):
    log = EventLog(tmp_path, 1 << 20, 1 << 30)
    sent = log.record(
        [node_event("sw-a", 0), node_event("sw-b", 0), node_event("sw-a", 1), make_event("pong")]
    )
    log.close_all()
    assert [e.get("cursor") for e in sent] == [1, 1, 2, None]
    back = read_all(tmp_path, "sw-a")
    assert [dict(e) for e in back] == [dict(sent[0]), dict(sent[2])]
    assert [json.loads(e.line) for e in back] == [dict(sent[0]), dict(sent[2])]


def test_a_routed_event_keeps_its_line_with_the_cursor_spliced_in(tmp_path):
    raw = b'{"type":"assistant_delta","job_id":"j1","node_id":0,"seq":4,"ts":1.5,"delta":"x"}'
    event = routed(raw, json.loads(raw), "sw-a", "r1")
    (stamped,) = EventLog(tmp_path, 1 << 20, 1 << 30).record([event])
    assert (
        json.loads(stamped.line)
        == dict(stamped)
        == {
            **json.loads(raw),
            "swarm_id": "sw-a",
            "request_id": "r1",
            "cursor": 1,
        }
    )


def test_query_answers_and_hostile_ids_are_not_logged(tmp_path):
    log = EventLog(tmp_path, 1 << 20, 1 << 30)
    status = make_event("swarm_status", swarm={"swarm_id": "sw-a"})
    hostile = node_event("../../etc", 0)
    launched = make_event("swarm_launched", swarm={"swarm_id": "sw-a", "nodes": []})
    sent = log.record([status, hostile, launched])
    assert [e.get("cursor") for e in sent] == [None, None, 1]
    assert sorted(os.listdir(tmp_path / "events")) == ["sw-a"]


def test_a_reopened_log_continues_its_cursors_and_drops_a_line_cut_by_a_crash(tmp_path):
    log = EventLog(tmp_path, 1 << 20, 1 << 30)
    log.record([node_event("sw-a", seq) for seq in range(3)])
    log.close_all()
    (segment,) = (tmp_path / "events" / "sw-a").iterdir()
    with open(segment, "ab") as out:
        out.write(b'{"type":"assistant_delta","cursor":4,"se')  # killed mid-write
    assert [e["cursor"] for e in read_all(tmp_path, "sw-a")] == [1, 2, 3]  # readers skip it
    again = EventLog(tmp_path, 1 << 20, 1 << 30)
    assert [e["cursor"] for e in again.record([node_event("sw-a", 3)])] == [4]
    again.close_all()
    assert [e["cursor"] for e in read_all(tmp_path, "sw-a")] == [1, 2, 3, 4]


def test_segments_rotate_and_the_oldest_go_past_the_bound(tmp_path):
    log = EventLog(tmp_path, 4096, 3 * 4096)
    for seq in range(400):
        log.record([node_event("sw-a", seq)])
    log.close_all()
    files = eventlog.segments(swarm_log_dir(tmp_path, "sw-a"))
    assert 2 <= len(files) <= 5
    assert sum(path.stat().st_size for _, path in files) <= 4 * 4096 + 4096
    cursors = [e["cursor"] for e in read_all(tmp_path, "sw-a")]
    assert cursors == list(range(cursors[0], 401)) and cursors[0] > 1
    assert files[0][0] == cursors[0]  # a segment is named by its first cursor


def test_a_tail_follows_the_log_across_rotations(tmp_path):
    log = EventLog(tmp_path, 4096, 1 << 30)
    tail = LogTail(swarm_log_dir(tmp_path, "sw-a"), Since(cursor=2))
    assert list(tail.poll()) == []
    seen = []
    for seq in range(300):
        log.record([node_event("sw-a", seq)])
        if seq % 37 == 0:
            seen += [e["cursor"] for e in tail.poll()]
    seen += [e["cursor"] for e in tail.poll()]
    log.close_all()
    assert seen == list(range(3, 301))
    assert len(eventlog.segments(swarm_log_dir(tmp_path, "sw-a"))) > 3


def test_since_a_time_starts_at_the_first_event_stamped_then(tmp_path):
    log = EventLog(tmp_path, 4096, 1 << 30)
    early = [node_event("sw-a", seq) for seq in range(100)]
    for event in early:
        event["ts"] = 1000.0 + event["seq"]
    log.record(early)
    log.close_all()
    back = read_all(tmp_path, "sw-a", parse_since(1050.0))
    assert [e["seq"] for e in back] == list(range(50, 100))
    iso = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(1090))
    assert [e["seq"] for e in read_all(tmp_path, "sw-a", parse_since(iso))] == list(range(90, 100))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, Since(cursor=0)),
        ("start", Since()),
        ("17", Since(cursor=17)),
        (12.5, Since(ts=12.5)),
        ("1970-01-01T00:00:10Z", Since(ts=10.0)),
    ],
)
def test_since_values(value, expected):
    assert parse_since(value) == expected


@pytest.mark.parametrize("value", [-1, True, "yesterday", None, [1]])
def test_bad_since_values_say_what_is_accepted(value):
    with pytest.raises(ValueError, match=r"cursor|ISO-8601"):
        parse_since(value)


def test_last_seqs_reads_back_to_what_the_saved_cursor_covers(tmp_path):
    log = EventLog(tmp_path, 1 << 20, 1 << 30)
    log.record([node_event("sw-a", seq, node_id=seq % 2) for seq in range(20)])
    log.close_all()
    directory = swarm_log_dir(tmp_path, "sw-a")
    saved = {"j1_0": 10, "j1_1": 11}
    assert eventlog.last_seqs(directory, saved, 0.0) == {"j1_0": 18, "j1_1": 19}
    assert eventlog.last_seqs(directory, {"j1_0": 18, "j1_1": 19}, 0.0) == {}
    assert eventlog.last_seqs(directory, {"j1_2": -1}, 0.0) == {"j1_0": 18, "j1_1": 19}


def test_a_long_cut_line_is_dropped_and_every_whole_line_kept(tmp_path):
    log = EventLog(tmp_path, 1 << 20, 1 << 30)
    log.record([node_event("sw-a", 0), node_event("sw-a", 1)])
    log.close_all()
    (segment,) = (tmp_path / "events" / "sw-a").iterdir()
    whole = segment.read_bytes()
    with open(segment, "ab") as out:
        # killed while writing a line longer than a read chunk, its newline far back
        out.write(b'{"type":"assistant_delta","delta":"' + b"y" * 70_000)
    again = EventLog(tmp_path, 1 << 20, 1 << 30)
    assert [e["cursor"] for e in again.record([node_event("sw-a", 2)])] == [3]
    again.close_all()
    assert segment.read_bytes().startswith(whole)
    assert [e["cursor"] for e in read_all(tmp_path, "sw-a")] == [1, 2, 3]


def test_a_log_that_cannot_be_written_keeps_routing_and_never_reuses_a_cursor(tmp_path):
    log = EventLog(tmp_path, 4096, 1 << 30)
    log.record([node_event("sw-a", 0)])
    directory = swarm_log_dir(tmp_path, "sw-a")
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()  # removed under the router: the next rotation cannot open a file
    sent = []
    for seq in range(1, 80):
        sent += log.record([node_event("sw-a", seq)])
    assert [e["cursor"] for e in sent] == list(range(2, 81))  # every event still goes out
    log.close_all()
    logged = [e["cursor"] for e in read_all(tmp_path, "sw-a")]
    assert logged and logged == sorted(set(logged)) and logged[0] > 2  # reopened, no reuse


def test_since_past_the_end_of_the_log_is_refused(tmp_path):
    log = EventLog(tmp_path, 1 << 20, 1 << 30)
    log.record([node_event("sw-a", seq) for seq in range(3)])
    log.close_all()
    directory = swarm_log_dir(tmp_path, "sw-a")
    eventlog.check_since(directory, Since(cursor=3))
    with pytest.raises(ValueError, match="past the end"):
        eventlog.check_since(directory, Since(cursor=4))
