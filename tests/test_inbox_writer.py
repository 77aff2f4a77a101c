"""hpc.inbox_writer: length-framed requests in, one locked append and one answer each."""

import io
import json

from codeswarm.hpc import inbox_writer, mailbox_io


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
