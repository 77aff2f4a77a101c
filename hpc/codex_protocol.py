"""What the worker says to ``codex app-server``: pure functions, no process, no I/O.

Facts behind them are in the repository's docs/codex-app-server.md: a turn blocks until every
request codex sends is answered, and per-turn usage is the difference of the running totals
codex reports.
"""

METHOD_NOT_FOUND = -32601
# Notifications the worker never uses; opting out keeps codex's stdout lean.
OPT_OUT = ["account/rateLimits/updated", "thread/status/changed", "remoteControl/status/changed"]
USAGE_KEYS = (
    ("input_tokens", "inputTokens"),
    ("cached_input_tokens", "cachedInputTokens"),
    ("output_tokens", "outputTokens"),
    ("reasoning_output_tokens", "reasoningOutputTokens"),
    ("total_tokens", "totalTokens"),
)


def initialize_params(version):
    return {
        "clientInfo": {"name": "codeswarm_worker", "title": None, "version": version},
        "capabilities": {"experimentalApi": False, "optOutNotificationMethods": OPT_OUT},
    }


def answer_for(method, decision):
    """The result for a request codex sent, given ``decision`` ("accept" or "decline").

    None means the worker does not know the request: answer it with METHOD_NOT_FOUND.
    Approvals of a running turn go to the client (``hpc.approvals``); this answers the rest
    at once: an approval outside any turn gets ``decision``, questions get empty answers and
    permission requests grant nothing beyond the sandbox.
    """
    accept = decision == "accept"
    if method in ("item/commandExecution/requestApproval", "item/fileChange/requestApproval"):
        return {"decision": "accept" if accept else "decline"}
    if method in ("execCommandApproval", "applyPatchApproval"):
        return {"decision": "approved" if accept else "denied"}
    if method == "item/permissions/requestApproval":
        return {"permissions": {}, "scope": "turn"}
    if method == "item/tool/requestUserInput":
        return {"answers": {}}
    if method == "mcpServer/elicitation/request":
        return {"action": "accept" if accept else "decline"}
    return None


def turn_usage(total_now, total_before):
    """This turn's tokens: codex's running total now minus at the turn's start."""
    now = total_now or {}
    before = total_before or {}
    return {ours: max(0, now.get(theirs, 0) - before.get(theirs, 0)) for ours, theirs in USAGE_KEYS}
