"""What the worker answers codex: every request gets a reply, so no turn ever blocks."""

import pytest

from codeswarm.hpc import codex_protocol


@pytest.mark.parametrize(
    ("method", "decision", "result"),
    [
        ("item/commandExecution/requestApproval", "accept", {"decision": "accept"}),
        ("item/commandExecution/requestApproval", "decline", {"decision": "decline"}),
        ("item/fileChange/requestApproval", "accept", {"decision": "accept"}),
        ("execCommandApproval", "accept", {"decision": "approved"}),
        ("applyPatchApproval", "decline", {"decision": "denied"}),
        ("item/permissions/requestApproval", "accept", {"permissions": {}, "scope": "turn"}),
        ("item/tool/requestUserInput", "accept", {"answers": {}}),
        ("mcpServer/elicitation/request", "decline", {"action": "decline"}),
        ("item/tool/call", "accept", None),
        ("account/chatgptAuthTokens/refresh", "accept", None),
    ],
)
def test_answers(method, decision, result):
    assert codex_protocol.answer_for(method, decision) == result


def test_turn_usage_is_the_difference_of_running_totals():
    before = {"inputTokens": 100, "outputTokens": 10, "totalTokens": 110}
    now = {"inputTokens": 250, "outputTokens": 30, "totalTokens": 280, "cachedInputTokens": 5}
    assert codex_protocol.turn_usage(now, before) == {
        "input_tokens": 150,
        "cached_input_tokens": 5,
        "output_tokens": 20,
        "reasoning_output_tokens": 0,
        "total_tokens": 170,
    }
    assert codex_protocol.turn_usage(None, None)["total_tokens"] == 0
