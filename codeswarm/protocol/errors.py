"""The stable codes clients can match on: input errors and injection failures.

Codes a worker writes come from ``codeswarm.hpc.records``, the one definition both sides share.
"""

from codeswarm.hpc import records

# A line the router could not use, or a problem it reports outside any injection.
INVALID_JSON = "invalid_json"
INVALID_ENCODING = "invalid_encoding"
NOT_AN_OBJECT = "not_an_object"
UNKNOWN_COMMAND = "unknown_command"
MISSING_FIELD = "missing_field"
INVALID_FIELD = "invalid_field"
LINE_TOO_LONG = "line_too_long"
UNKNOWN_SWARM = "unknown_swarm"
BACKEND = "backend"
INTERNAL = "internal"  # a bug stopped the router; the message says where its log is
UNENCODABLE_EVENT = "unencodable_event"  # stands in for an event no JSON line can carry
INPUT_ERROR_CODES = (
    INVALID_JSON,
    INVALID_ENCODING,
    NOT_AN_OBJECT,
    UNKNOWN_COMMAND,
    MISSING_FIELD,
    INVALID_FIELD,
    LINE_TOO_LONG,
)
# Why a command failed on one node (an ``error`` event naming the node), and why an injection
# failed (``inject_failed.error``).
NODE_GONE = "node_gone"
# ``scale --remove`` took the node out: its queued prompts fail with it (the worker's code),
# and a prompt or command sent to it later is refused with it.
NODE_REMOVED = records.FAILED_NODE_REMOVED
UNKNOWN_TARGET = "unknown_target"
ERROR_CODES = (
    *INPUT_ERROR_CODES,
    UNKNOWN_SWARM,
    NODE_GONE,
    NODE_REMOVED,
    UNKNOWN_TARGET,
    BACKEND,
    INTERNAL,
    UNENCODABLE_EVENT,
    *records.WORKER_ERROR_CODES,
)

TIMEOUT = "timeout"
SSH = "ssh"
FAILURE_CODES = (TIMEOUT, SSH, BACKEND, NODE_GONE, UNKNOWN_TARGET, *records.WORKER_FAILURE_CODES)
