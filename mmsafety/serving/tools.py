"""Tool calling for mmsafety-serve: `tools` and `tool_choice` checked, calls parsed from the model's own format.

The model writes calls in its tool format (mmsafety.agents.formats: `hermes` for templates with
`<tool_call>`, `fu` for the organism and other models without one); the server parses each choice's
text and answers OpenAI's `tool_calls` for every call that names a declared tool (its arguments as a
JSON string, not checked against the schema: as OpenAI without strict mode, the client validates).
With `strict: true` a call is answered only when its arguments match the schema (checked after
generation; otherwise it stays in the content). What this server cannot do is refused by name, never
ignored: `tool_choice` "required" or a named function (no constrained decoding forces a call),
`parallel_tool_calls: false`, streaming with tools. A template that renders `tools` gets them (apply_chat_template(tools=...)).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import jsonschema

from mmsafety.agents.formats import TOOL_FORMATS, ToolFormat
from mmsafety.serving.protocol import RequestError

TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class ToolRequest:
    tools: list[dict]  # OpenAI function entries, as sent
    choice: str        # "auto" or "none"

    @property
    def names(self) -> set[str]:
        return {t["function"]["name"] for t in self.tools}

    def conforms(self, name: str, arguments: dict) -> bool:
        """Whether a call may be answered: any call to a declared tool, and with `strict: true` only one
        whose arguments match the tool's schema (the guarantee strict gives, kept by checking after
        generation, since nothing constrains the decoding)."""
        fn = next(t["function"] for t in self.tools if t["function"]["name"] == name)
        if not fn.get("strict"):
            return True
        return jsonschema.Draft202012Validator(fn.get("parameters", {"type": "object"})).is_valid(arguments)

    @property
    def offered(self) -> bool:
        return bool(self.tools) and self.choice != "none"


def tool_format_for(template: str | None, name: str = "auto") -> ToolFormat:
    """`name`, or with "auto" hermes when the chat template writes `<tool_call>`, else fu."""
    if name == "auto":
        name = "hermes" if template and "<tool_call>" in template else "fu"
    return TOOL_FORMATS.get(name)


def parse_tools(body: dict) -> ToolRequest | None:
    """`tools`, `tool_choice` and `parallel_tool_calls` checked (RequestError naming the field)."""
    tools, choice, parallel = body.get("tools"), body.get("tool_choice"), body.get("parallel_tool_calls")
    if parallel not in (None, True):
        raise RequestError(f"parallel_tool_calls={parallel!r} is not supported by mmsafety-serve: it cannot stop the "
                           "model writing several calls; send true or leave it out", "parallel_tool_calls",
                           "unsupported_parameter")
    if tools is not None and not isinstance(tools, list):
        raise RequestError("tools must be a list of {\"type\": \"function\", \"function\": {...}}", "tools", "invalid_value")
    for i, tool in enumerate(tools or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
            raise RequestError(f"tools[{i}] must be {{\"type\": \"function\", \"function\": {{\"name\": ...}}}}",
                               f"tools[{i}]", "invalid_value")
        if not isinstance(fn.get("name"), str) or not TOOL_NAME.match(fn["name"]):
            raise RequestError(f"tools[{i}].function.name must be 1 to 64 letters, digits, _ or -",
                               f"tools[{i}].function.name", "invalid_value")
        if fn.get("strict") not in (None, True, False):
            raise RequestError(f"tools[{i}].function.strict must be true or false", f"tools[{i}].function.strict",
                               "invalid_value")
        params = fn.get("parameters", {"type": "object"})
        try:
            jsonschema.Draft202012Validator.check_schema(params)
        except jsonschema.SchemaError as e:
            raise RequestError(f"tools[{i}].function.parameters is not a JSON schema: {e.message[:200]}",
                               f"tools[{i}].function.parameters", "invalid_value") from None
    if len({t["function"]["name"] for t in tools or []}) != len(tools or []):
        raise RequestError("tools: two tools have the same name", "tools", "invalid_value")
    if choice not in (None, "auto", "none"):
        raise RequestError(f"tool_choice={choice!r} is not supported by mmsafety-serve: it cannot force the model to "
                           "call one of the tools (no constrained decoding); send \"auto\" or \"none\"", "tool_choice",
                           "unsupported_parameter")
    if choice == "auto" and not tools:
        raise RequestError("tool_choice is only allowed when tools are specified", "tool_choice", "invalid_value")
    if not tools:
        return None
    if body.get("stream"):
        raise RequestError("stream=true with tools is not supported by mmsafety-serve; send stream=false", "stream",
                           "unsupported_parameter")
    return ToolRequest(list(tools), choice or "auto")


def tool_calls_of(text: str, fmt: ToolFormat, request: ToolRequest, choice: int) -> tuple[str | None, list[dict]]:
    """(content, tool_calls) of one answer: calls naming a declared tool become `tool_calls` and leave
    the content; anything else (plain text, a malformed or undeclared call) stays in it."""
    calls = []
    for k, call in enumerate(fmt.parse(text)):
        if call.name in request.names and call.arguments is not None and request.conforms(call.name, call.arguments):
            calls.append({"id": f"call_{choice}_{k}", "type": "function",
                          "function": {"name": call.name, "arguments": json.dumps(call.arguments)}})
            text = text.replace(call.raw, "", 1)
    content = text.strip()
    return (content or None) if calls else text, calls
