"""Watch one codex agent work on this machine: a worker, a mailbox and the local model server.

Usage: .venv/bin/python scripts/try_worker.py "your prompt" [more prompts...]
Prints every outbox event as it is written, then shuts the worker down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from codeswarm.codex_binary import find_codex
from codeswarm.hpc import records
from codeswarm.model_server import ModelServer

ROOT = Path(__file__).resolve().parents[1]


def main(prompts: list[str]) -> int:
    codex = find_codex()
    home = Path.home() / ".cache" / "codeswarm-try"
    with ModelServer() as model, tempfile.TemporaryDirectory() as tmp:
        mailbox = Path(tmp) / "mailbox"
        settings = Path(tmp) / "worker.json"
        provider = {"name": "local", "base_url": model.url, "wire_api": "responses"}
        agent = {
            "codex_path": codex,
            "model": "mock-model",
            "config": {"model_provider": "local", "model_providers": {"local": provider}},
        }
        settings.write_text(json.dumps({"agent": agent}))
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hpc.codex_worker",
                "--mailbox",
                str(mailbox),
                "--job-id",
                "try",
                "--node-id",
                "0",
                "--settings",
                str(settings),
                "--codex-home",
                str(home),
            ],
            cwd=ROOT,
        )
        inbox = mailbox / "inbox" / "try_0.jsonl"
        while not inbox.parent.exists():
            time.sleep(0.05)
        with open(inbox, "a", encoding="utf-8") as f:
            for n, prompt in enumerate(prompts):
                f.write(records.encode_line(records.inbox_user(f"try-{n}", prompt)))
            f.write(records.encode_line(records.inbox_shutdown()))
        outbox = mailbox / "outbox" / "try_0.jsonl"
        archive = mailbox / "archive" / "try_0.jsonl"
        offset = 0
        while True:
            path = outbox if outbox.exists() else archive
            if path.exists():
                data = path.read_bytes()
                for line in data[offset:].splitlines():
                    print(line.decode())
                offset = len(data)
            if worker.poll() is not None and path == archive:
                return worker.returncode
            time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["Say hello"]))
