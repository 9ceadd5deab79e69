"""Tools declared as OpenAI function schemas, their calls validated before anything runs.

A `Tool` is data (name, description, JSON schema of its arguments) and a function of the
environment's state. `validate` checks a parsed call against the declared tools: an unknown name,
a missing, extra or wrong-typed argument is a reason the call is invalid, and an invalid call is
recorded, never executed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import jsonschema


@dataclass(frozen=True)
class Tool:
    """One tool: `run(state, **arguments) -> (result text, effect or None)`, where the effect says
    what the call changed in the state (None: it only read)."""

    name: str
    description: str
    parameters: dict  # JSON schema of the arguments object ("type": "object")
    run: Callable[..., tuple[str, str | None]]

    def openai_schema(self) -> dict:
        """The tool as OpenAI's `tools=[...]` entry."""
        return {"type": "function", "function": {"name": self.name, "description": self.description,
                                                 "parameters": self.parameters}}


def string_params(required: dict[str, str], optional: dict[str, str] | None = None) -> dict:
    """A JSON schema for an object of string arguments: {name: description}; no others allowed."""
    props = {k: {"type": "string", "description": d} for k, d in {**required, **(optional or {})}.items()}
    return {"type": "object", "properties": props, "required": list(required), "additionalProperties": False}


@dataclass
class ToolCall:
    """A call as the model wrote it. `arguments` is None when they did not parse; `error` says why
    the call is invalid (set by the parser or by `validate`); `raw` is the text of the call."""

    name: str | None
    arguments: dict[str, Any] | None
    raw: str
    error: str | None = None
    id: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return self.error is None


def validate(call: ToolCall, tools: dict[str, Tool]) -> ToolCall:
    """Set `call.error` when the call names no declared tool or its arguments break the tool's schema."""
    if call.error is not None:
        return call
    if call.name not in tools:
        call.error = f"unknown tool {str(call.name)[:60]!r}; declared: {', '.join(sorted(tools))}"
    elif not isinstance(call.arguments, dict):
        call.error = "arguments are not a JSON object"
    else:
        problem = jsonschema.exceptions.best_match(
            jsonschema.Draft202012Validator(tools[call.name].parameters).iter_errors(call.arguments))
        if problem is not None:
            where = "/".join(map(str, problem.absolute_path)) or "arguments"
            call.error = f"{call.name}: {where}: {problem.message[:200]}"
    return call
