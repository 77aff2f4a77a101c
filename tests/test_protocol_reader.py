"""The daemon's input reader: pipes, regular files, /dev/null, and lines too long to keep."""

import os
import threading

from codeswarm.actors import protocol


def read_all(fd: int) -> list[bytes | None]:
    return list(protocol.LineReader(fd, threading.Event()).lines())


def test_an_over_long_line_gives_one_none_then_reading_goes_on(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(protocol, "READ_SIZE", 256)
    read_fd, write_fd = os.pipe()
    data = b"x" * 5000 + b"\n" + b'{"command":"ping"}\n' + b"tail without newline"

    def writer() -> None:
        os.write(write_fd, data)
        os.close(write_fd)

    threading.Thread(target=writer).start()
    assert read_all(read_fd) == [None, b'{"command":"ping"}', b"tail without newline"]


def test_regular_files_and_dev_null_are_read_to_the_end(tmp_path):
    path = tmp_path / "commands.jsonl"
    path.write_bytes(b'{"command":"ping"}\n{"command":"list"}\n')
    with open(path, "rb") as f:
        assert read_all(f.fileno()) == [b'{"command":"ping"}', b'{"command":"list"}']
    with open(os.devnull, "rb") as f:
        assert read_all(f.fileno()) == []
