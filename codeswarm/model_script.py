"""Scripted tool-calling conversations for the model server, so a client agent runs offline.

codex is scripted one reply at a time (`Rule`). An agent such as OpenClaw instead needs a plan:
call my `exec` tool with this command, read what it printed, call the next tool with a value
taken from that output, then answer. A `Script` is that plan. It answers every request whose
user messages contain its `match` marker, and which step it plays is the number of tool results
in the request: stateless, so a retried request replays the same step. A step's `capture`
takes values out of its tool's output by regular expression (group 1 if the pattern has one);
`{{name}}` in later arguments and in the final text stands for them. Standard library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@dataclass(frozen=True)
class Step:
    """Either call `tool` with `arguments`, or answer `text` and end the turn."""

    tool: str | None = None
    arguments: JSON = field(default_factory=dict)
    text: str | None = None
    capture: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.tool is None) == (self.text is None):
            raise ValueError(
                f"a script step has either a tool or a text, not both or neither: {self}"
            )
        for name, pattern in self.capture.items():
            try:  # a bad pattern fails when the script is added, not mid-run
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"capture {name!r}: bad pattern {pattern!r}: {exc}") from None
            if not re.fullmatch(r"\w+", name):
                raise ValueError(f"capture name {name!r}: letters, digits and _ only")

    @classmethod
    def from_json(cls, data: JSON) -> Step:
        return cls(**data)  # unknown fields raise TypeError


@dataclass(frozen=True)
class Call:
    """What a step asks of the server: a function call, or (tool None) a text answer."""

    tool: str | None
    arguments: JSON
    text: str


@dataclass(frozen=True)
class Script:
    match: str
    steps: tuple[Step, ...]

    @classmethod
    def from_json(cls, data: JSON) -> Script:
        steps = tuple(Step.from_json(s) for s in data["steps"])
        if not data.get("match") or not steps:
            raise ValueError("a script needs a non-empty match marker and at least one step")
        return cls(data["match"], steps)

    def to_json(self) -> JSON:
        steps = [
            {"tool": s.tool, "arguments": s.arguments, "text": s.text, "capture": s.capture}
            for s in self.steps
        ]
        return {"match": self.match, "steps": steps}

    def matches(self, body: JSON) -> bool:
        return any(self.match in text for text in user_texts(body))

    def next_call(self, body: JSON) -> Call:
        """The step after the tool results the request already carries.

        When a capture finds nothing, the answer says so (with the output it searched), so that
        a test fails on the agent's final text with the reason instead of on a later step.
        """
        outputs = tool_outputs(body)
        values: dict[str, str] = {}
        for index, (step, output) in enumerate(zip(self.steps, outputs, strict=False)):
            for name, pattern in step.capture.items():
                found = re.search(pattern, output, re.DOTALL)
                if found is None:
                    return _failure(
                        f"step {index} ({step.tool}): /{pattern}/ found nothing in {output!r}"
                    )
                values[name] = found.group(1) if found.re.groups else found.group(0)
        if len(outputs) >= len(self.steps):
            return _failure(
                f"{len(outputs)} tool results, but the script has {len(self.steps)} steps"
            )
        step = self.steps[len(outputs)]
        try:
            if step.tool is None:
                return Call(None, {}, fill(step.text or "", values))
            return Call(step.tool, fill(step.arguments, values), "")
        except KeyError as exc:
            return _failure(
                f"step {len(outputs)} uses {{{{{exc.args[0]}}}}}, captured by no earlier step"
            )


def _failure(reason: str) -> Call:
    return Call(None, {}, f"model script failed: {reason}")


def fill(value: Any, values: dict[str, str]) -> Any:
    """`value` with each `{{name}}` in its strings replaced; KeyError names a missing value."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], value)
    if isinstance(value, dict):
        return {key: fill(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [fill(item, values) for item in value]
    return value


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def user_texts(body: JSON) -> list[str]:
    """The text of every user message of a Responses request, oldest first."""
    items = [i for i in body.get("input") or [] if isinstance(i, dict)]
    return [_text(i.get("content")) for i in items if i.get("role") == "user"]


def tool_outputs(body: JSON) -> list[str]:
    """The output of every function call the request reports back, oldest first."""
    items = [i for i in body.get("input") or [] if isinstance(i, dict)]
    return [_text(i.get("output")) for i in items if i.get("type") == "function_call_output"]
