"""Scripted conversations of the model server: the step logic, then over HTTP."""

from __future__ import annotations

import json
from typing import Any

import pytest

from codeswarm.model_script import Call, Script, Step, fill, tool_outputs, user_texts
from codeswarm.model_server import ModelServer, Reply
from tests.test_model_server import call, parse_sse

JSON = dict[str, Any]

PLAN = Script(
    "MARK",
    (
        Step(tool="exec", arguments={"command": "launch"}, capture={"swarm": r"(sw-\w+)"}),
        Step(tool="exec", arguments={"command": "ask {{swarm}}", "n": [1, "{{swarm}}"]}),
        Step(text="{{swarm}} done"),
    ),
)


def body(*outputs: str, prompt: str = "[Mon] MARK go") -> JSON:
    """A Responses request as OpenClaw sends it: its prompt, its context, then tool results."""
    items: list[JSON] = [
        {"role": "system", "content": "you are an agent"},
        {"role": "user", "content": [{"type": "input_text", "text": prompt}]},
        {"role": "user", "content": "<<<internal context>>>"},
    ]
    for n, output in enumerate(outputs):
        items.append({"type": "function_call", "call_id": f"c{n}", "name": "exec"})
        items.append({"type": "function_call_output", "call_id": f"c{n}", "output": output})
    return {"model": "mock-model", "input": items}


def test_the_step_is_the_number_of_tool_results() -> None:
    assert PLAN.next_call(body()) == Call("exec", {"command": "launch"}, "")
    second = PLAN.next_call(body("launched sw-1a2b"))
    assert second == Call("exec", {"command": "ask sw-1a2b", "n": [1, "sw-1a2b"]}, "")
    assert PLAN.next_call(body("launched sw-1a2b", "answers")) == Call(None, {}, "sw-1a2b done")
    assert PLAN.next_call(body("launched sw-1a2b")) == second  # a retry replays its step


def test_the_marker_may_be_in_any_user_message() -> None:
    assert PLAN.matches(body())
    assert not PLAN.matches(body(prompt="no marker here"))
    assert user_texts(body()) == ["[Mon] MARK go", "<<<internal context>>>"]


def test_a_capture_that_finds_nothing_ends_the_turn_saying_why() -> None:
    answer = PLAN.next_call(body("Error: no such option"))
    assert answer.tool is None
    assert answer.text.startswith("model script failed: step 0 (exec): /(sw-\\w+)/ found nothing")
    assert "Error: no such option" in answer.text


def test_more_results_than_steps_and_unknown_placeholders_fail_by_name() -> None:
    over = PLAN.next_call(body("sw-1", "b", "c"))
    assert over.text == "model script failed: 3 tool results, but the script has 3 steps"
    unknown = Script("M", (Step(text="{{nope}}"),)).next_call(body(prompt="M"))
    assert unknown.text == "model script failed: step 0 uses {{nope}}, captured by no earlier step"


def test_a_capture_without_a_group_takes_the_whole_match() -> None:
    script = Script("M", (Step(tool="t", capture={"v": r"\d+"}), Step(text="<{{v}}>")))
    assert script.next_call(body("a 42 b", prompt="M")).text == "<42>"


def test_outputs_given_as_content_parts() -> None:
    request = body()
    request["input"].append(
        {"type": "function_call_output", "output": [{"type": "input_text", "text": "sw-9"}]}
    )
    assert tool_outputs(request) == ["sw-9"]


@pytest.mark.parametrize(
    "data",
    [
        {"match": "M", "steps": [{"tool": "t", "text": "both"}]},
        {"match": "M", "steps": [{"arguments": {}}]},
        {"match": "M", "steps": [{"tool": "t", "capture": {"v": "("}}]},
        {"match": "M", "steps": [{"tool": "t", "capture": {"a-b": "x"}}]},
        {"match": "", "steps": [{"text": "x"}]},
        {"match": "M", "steps": []},
    ],
)
def test_bad_scripts_are_refused_when_added(data: JSON) -> None:
    with pytest.raises(ValueError):
        Script.from_json(data)


def test_fill_leaves_other_braces_alone() -> None:
    assert fill({"c": "f() { echo {{x}}; }", "k": 3}, {"x": "1"}) == {
        "c": "f() { echo 1; }",
        "k": 3,
    }


def test_a_script_over_http_streams_function_calls_then_text() -> None:
    with ModelServer() as server:
        status, _, raw = call(f"{server.url.removesuffix('/v1')}/_control/scripts", PLAN.to_json())
        assert (status, json.loads(raw)) == (200, {"scripts": 1})
        assert server.scripts == [PLAN.to_json()]
        server.add_rule("MARK", Reply(text="a rule"), times=None)  # scripts come first

        status, _, raw = call(f"{server.url}/responses", body())
        events = parse_sse(raw)
        item = events[-1]["response"]["output"][0]
        assert (item["type"], item["name"]) == ("function_call", "exec")
        assert json.loads(item["arguments"]) == {"command": "launch"}
        assert "response.output_text.delta" not in [e["type"] for e in events]

        status, _, raw = call(f"{server.url}/responses", body("sw-7", "ok"))
        output = parse_sse(raw)[-1]["response"]["output"]
        assert [(o["type"], o["content"][0]["text"]) for o in output] == [("message", "sw-7 done")]

        server.reset()
        assert server.scripts == []
