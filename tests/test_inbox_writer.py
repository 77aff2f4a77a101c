"""hpc.inbox_writer: length-framed requests in, one locked append and one answer each."""

import io
import json

from codeswarm.hpc import inbox_writer, inbox_writer_wire, mailbox_io


def request(request_id: str, key: str, data: bytes) -> bytes:
    return b"%s %s %d\n%s" % (request_id.encode(), key.encode(), len(data), data)


def test_appends_and_answers_each_request(tmp_path):
    mailbox_io.ensure_mailbox(str(tmp_path))
    hostile = json.dumps({"type": "user", "injection_id": "a", "content": "x\n$(id) é"}) + "\n"
    stdin = io.BytesIO(
        request("1", "42_0", hostile.encode())
        + request("2", "42_1", b'{"type":"interrupt"}\n{"type":"shutdown"}\n')
        + request("3", "../etc_0", b"{}\n")
        + request("4", "42_0", b"no newline")
    )
    stdout = io.BytesIO()
    assert inbox_writer.serve(str(tmp_path), stdin, stdout) == 0
    answers = stdout.getvalue().decode().splitlines()
    assert answers[:2] == ["1 ok", "2 ok"]
    assert answers[2].startswith("3 error") and "job_id" in answers[2]
    assert answers[3].startswith("4 error") and "partial line" in answers[3]
    assert (tmp_path / "inbox" / "42_0.jsonl").read_text() == hostile
    assert (tmp_path / "inbox" / "42_1.jsonl").read_text().count("\n") == 2


def test_a_malformed_header_ends_the_writer(tmp_path):
    stdout = io.BytesIO()
    assert inbox_writer.serve(str(tmp_path), io.BytesIO(b"garbage\n"), stdout) == 2
    assert stdout.getvalue().startswith(b"- error")


def test_a_request_cut_short_appends_nothing(tmp_path):
    mailbox_io.ensure_mailbox(str(tmp_path))
    stdout = io.BytesIO()
    cut = b"1 42_0 400\n" + b'{"type":"user","injection_id":"a","content":"x'
    assert inbox_writer.serve(str(tmp_path), io.BytesIO(cut), stdout) == 0
    assert not (tmp_path / "inbox" / "42_0.jsonl").exists()
    assert stdout.getvalue() == b""


class CountingFlushes(io.BytesIO):
    """stdout that counts its flushes, each one a round trip's answers over SSH."""

    flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def test_a_batch_is_answered_append_by_append_in_one_flush(tmp_path):
    mailbox_io.ensure_mailbox(str(tmp_path))
    frames = [request(str(n), f"42_{n}", b'{"type":"interrupt"}\n') for n in range(50)]
    frames[7] = request("7", "../etc_0", b"{}\n")
    stdin = io.BytesIO(inbox_writer_wire.encode_batch(frames) + request("x", "42_0", b"{}\n"))
    stdout = CountingFlushes()
    assert inbox_writer.serve(str(tmp_path), stdin, stdout) == 0
    answers = stdout.getvalue().decode().splitlines()
    assert [a.split()[:2] for a in answers] == [
        [str(n), "error" if n == 7 else "ok"] for n in range(50)
    ] + [["x", "ok"]]
    assert stdout.flushes == 2  # the batch, then the lone request
    assert (tmp_path / "inbox" / "42_49.jsonl").read_bytes() == b'{"type":"interrupt"}\n'
    assert (tmp_path / "inbox" / "42_0.jsonl").read_bytes() == b'{"type":"interrupt"}\n{}\n'


def test_a_batch_cut_short_appends_the_requests_read_whole(tmp_path):
    mailbox_io.ensure_mailbox(str(tmp_path))
    whole = request("1", "42_1", b"{}\n")
    stdin = io.BytesIO(b"batch 2\n" + whole + b"2 42_2 400\n{")
    stdout = io.BytesIO()
    assert inbox_writer.serve(str(tmp_path), stdin, stdout) == 0
    assert stdout.getvalue() == b"1 ok\n"
    assert not (tmp_path / "inbox" / "42_2.jsonl").exists()
