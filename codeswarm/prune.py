"""``codeswarm prune``: forget finished swarms and remove what they left, here and on the cluster.

A released swarm keeps its registry record (marked final) so that ``list`` shows it and late
lines are recognised; its mailbox files, workspaces and CODEX_HOMEs stay on the cluster. This
removes all of that for swarms that ended longer ago than a given age.
"""

from __future__ import annotations

import re
import time

from codeswarm import eventlog
from codeswarm.backends import Pruned, Transport
from codeswarm.registry import SwarmRecord, SwarmRegistry

_AGE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_age(text: str) -> float:
    """Seconds in an age such as ``90``, ``30m``, ``12h`` or ``7d``; ValueError otherwise."""
    match = _AGE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not an age like 30m, 12h or 7d")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def finished_before(swarms: list[SwarmRecord], cutoff: float) -> list[SwarmRecord]:
    """Ended swarms whose every node has exited, that ended before ``cutoff``.

    A terminated swarm's workers may still be shutting down: its files stay until the
    scheduler reports every node gone. Old records without ``ended`` use ``created``.
    """
    return [
        s for s in swarms if s.is_final() and s.all_exited() and (s.ended or s.created) <= cutoff
    ]


def prune(
    registry: SwarmRegistry, transport: Transport, older_than: float, dry_run: bool = False
) -> list[tuple[SwarmRecord, Pruned]]:
    """Remove the files, then the registry records, of swarms that ended ``older_than`` ago.

    Returns each chosen swarm with what was done (nothing on a dry run). Records go only
    after their files: a failure, or a swarm whose worktree could not be retired (its
    ``Pruned.error``), leaves them listed, to be pruned again.
    """
    chosen = finished_before(registry.all(), time.time() - older_than)
    if dry_run or not chosen:
        return [(swarm, Pruned([])) for swarm in chosen]
    done = transport.remove_swarm_files(chosen)
    results = [(swarm, done.get(swarm.swarm_id, Pruned([]))) for swarm in chosen]
    gone = [swarm.swarm_id for swarm, result in results if result.error is None]
    registry.remove(gone)
    for swarm_id in gone:
        eventlog.remove(registry.dir, swarm_id)
    return results
