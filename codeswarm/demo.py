"""The main job on the local default: a 2-node swarm answering a prompt, end to end.

It starts the local model server (so no API key or network is needed), embeds the router
with the local backend, launches two real codex agents, sends both one prompt, prints their
events as they stream, and terminates the swarm. The same few calls drive a cluster swarm
with a Slurm config.

It ships in the package so that an installed wheel can run the main job too:
``python -m codeswarm.demo ["your prompt"]`` (codex from ``$CODESWARM_CODEX``, the source
checkout's pinned binary, or PATH: see ``codeswarm.codex_binary``).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from codeswarm.config import Config, parse_config
from codeswarm.embed import Codeswarm
from codeswarm.model_server import ModelServer


def demo_config(model_url: str, root: Path) -> Config:
    """The local default, with codex pointed at the local model server."""
    provider = {"name": "local model server", "base_url": model_url, "wire_api": "responses"}
    return parse_config(
        {
            "backend": "local",
            "cluster": {"workspace_root": str(root / "workspace")},
            "router": {"state_dir": str(root / "state")},
            "agent": {
                "model": "mock-model",
                "config": {"model_provider": "local", "model_providers": {"local": provider}},
            },
        }
    )


def main(prompt: str) -> int:
    runs = Path.home() / ".codeswarm"
    runs.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="demo-", dir=runs))
    with ModelServer() as model, Codeswarm(demo_config(model.url, root)) as swarms:
        swarm = swarms.launch(nodes=2)
        print(f"launched {swarm['swarm_id']} (job {swarm['job_id']}, 2 nodes)", file=sys.stderr)
        request = swarms.inject(swarm["swarm_id"], prompt, nodes="all")
        finished = 0
        for event in swarms.events(timeout=120):
            print(json.dumps(event))
            if event.get("request_id") == request and event["type"] in ("usage", "inject_failed"):
                finished += 1
                if finished == 2:
                    break
        swarms.terminate(swarm["swarm_id"])
    print(f"done; mailbox and logs kept in {root}", file=sys.stderr)
    return 0 if finished == 2 else 1


if __name__ == "__main__":
    sys.exit(main(" ".join(sys.argv[1:]) or "Say hello to the swarm."))
