"""Which agent a worker is, from the environment Slurm gives each task of a swarm's job.

A job runs ``agents_per_node`` tasks a node, and its task id (``SLURM_PROCID``, 0..N-1 in
block order: a node's agents are neighbours) is the agent's ``node_id``. A task of a job
array holds ``CODESWARM_AGENTS_PER_TASK`` agents from ``array task id x that`` on, and all of
them file under the array's job id, so that the router addresses every agent of the swarm
by one job id. ``CODESWARM_JOB_ID`` names that job when a task is resubmitted alone, or when
a later job runs agents of the swarm (``scale``); ``CODESWARM_NODE_OFFSET`` is then the index
of that job's first agent. ``CODESWARM_CONTINUATION`` is set in a continuation job
(slurm.continue): its workers run the prompts the job before requeued; any other job fails them.
Standard library only, Python >= 3.8.
"""

AGENTS_PER_TASK = "CODESWARM_AGENTS_PER_TASK"
JOB_ID = "CODESWARM_JOB_ID"
NODE_OFFSET = "CODESWARM_NODE_OFFSET"
CONTINUATION = "CODESWARM_CONTINUATION"


def job_id(env):
    """The swarm's job id: the array's for an array task, else the job's; None outside Slurm."""
    return env.get(JOB_ID) or env.get("SLURM_ARRAY_JOB_ID") or env.get("SLURM_JOB_ID")


def node_id(env):
    """The agent's index over the whole swarm, or None outside Slurm.

    ``SLURM_NODEID`` is the fallback for a worker started without srun's task ids (one a
    node, as before agents per node existed).
    """
    task = env.get("SLURM_PROCID", env.get("SLURM_NODEID"))
    if task is None:
        return None
    index = int(task)
    array_task = env.get("SLURM_ARRAY_TASK_ID")
    if array_task is not None and env.get(AGENTS_PER_TASK):
        index += int(array_task) * int(env[AGENTS_PER_TASK])
    return index + int(env.get(NODE_OFFSET) or 0)
