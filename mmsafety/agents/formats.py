"""Tool-call syntaxes: how a model writes a call, how its calls are parsed, how results go back.

- `hermes`: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, the format of Qwen2.5's
  chat template and other Hermes-style models (results go back in `<tool_response>` blocks).
- `fu`: Fu et al.'s text syntax for models without a tool template: `<function.NAME key="value">`,
  and Expedia's `REQUEST TO EXPEDIA` followed by one JSON object (a `book_flight` call).

Parsing never raises: text that starts a call but does not finish one (malformed JSON, an unclosed
tag, a non-object) is an invalid `ToolCall` with the reason, so the trajectory records it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

from mmsafety.agents.tools import ToolCall
from mmsafety.registry import Registry

HERMES_BLOCK = re.compile(r"<tool_call>(?P<body>.*?)(?:</tool_call>|\Z)", re.S)
FU_CALL = re.compile(r'<function\.(?P<name>\w+)(?P<args>(?:\s+\w+="[^"]*")*)\s*>')
FU_ARGUMENT = re.compile(r'(\w+)="([^"]*)"')
FU_OPENING = "<function."
EXPEDIA_HEADER = "REQUEST TO EXPEDIA"
MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\((?P<url>[^)\s]+)\)")


@dataclass(frozen=True)
class ToolFormat:
    """`parse(text) -> [ToolCall]` in order of appearance; `render_call(name, arguments) -> text` (a
    target or a training answer in this syntax); `render_results(entries) -> text` (the trajectory's
    entries of one turn, as the model reads them back)."""

    parse: Callable[[str], list[ToolCall]]
    render_call: Callable[[str, dict], str]
    render_results: Callable[[list[dict]], str]


TOOL_FORMATS: Registry[ToolFormat] = Registry("case.tool_format", kind="tool_format")


def _hermes_call(body: str, raw: str, index: int) -> ToolCall:
    try:
        obj = json.loads(body)
    except ValueError as e:
        return ToolCall(None, None, raw, f"malformed JSON in <tool_call>: {e}", f"call-{index}")
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return ToolCall(None, None, raw, "a <tool_call> must hold {\"name\": string, \"arguments\": object}", f"call-{index}")
    args = obj.get("arguments", {})
    if isinstance(args, str):  # OpenAI's wire form: the arguments as a JSON string
        try:
            args = json.loads(args)
        except ValueError as e:
            return ToolCall(obj["name"], None, raw, f"{obj['name']}: arguments are malformed JSON: {e}", f"call-{index}")
    if not isinstance(args, dict):
        return ToolCall(obj["name"], None, raw, f"{obj['name']}: arguments are not a JSON object", f"call-{index}")
    return ToolCall(obj["name"], args, raw, None, f"call-{index}")


def parse_hermes(text: str) -> list[ToolCall]:
    """Every `<tool_call>` block; one cut off by the end of the text is parsed as far as it goes."""
    return [_hermes_call(m.group("body").strip(), m.group(0), i) for i, m in enumerate(HERMES_BLOCK.finditer(text))]


def render_hermes_call(name: str, arguments: dict) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": arguments}) + "\n</tool_call>"


def render_hermes_results(entries: list[dict]) -> str:
    return "\n".join(f"<tool_response>\n{_result_text(e)}\n</tool_response>" for e in entries)


def _result_text(entry: dict) -> str:
    return entry["result"] if entry["valid"] else f"error: {entry['error']}"


def _expedia_call(text: str, at: int, index: int) -> tuple[ToolCall, int]:
    start = at + len(EXPEDIA_HEADER)
    rest = text[start:]
    skipped = len(rest) - len(rest.lstrip())
    try:
        obj, end = json.JSONDecoder().raw_decode(rest.lstrip())
    except ValueError as e:
        return ToolCall("book_flight", None, text[at:at + 400], f"REQUEST TO EXPEDIA: malformed JSON: {e}",
                        f"call-{index}"), start
    stop = start + skipped + end
    if not isinstance(obj, dict):
        return ToolCall("book_flight", None, text[at:stop], "REQUEST TO EXPEDIA: not a JSON object", f"call-{index}"), stop
    return ToolCall("book_flight", obj, text[at:stop], None, f"call-{index}"), stop


def parse_fu(text: str) -> list[ToolCall]:
    """Every `<function.NAME key="value">` tag and `REQUEST TO EXPEDIA {json}` request, in order; a
    `<function.` that does not open a whole tag is an invalid call."""
    found: list[tuple[int, ToolCall]] = []
    covered: set[int] = set()
    for m in FU_CALL.finditer(text):
        found.append((m.start(), ToolCall(m.group("name"), dict(FU_ARGUMENT.findall(m.group("args"))), m.group(0))))
        covered.add(m.start())
    at = text.find(FU_OPENING)
    while at >= 0:
        if at not in covered:
            found.append((at, ToolCall(None, None, text[at:at + 200], "malformed <function.NAME key=\"value\"> call "
                                                                       "(unclosed tag or unquoted value)")))
        at = text.find(FU_OPENING, at + 1)
    at = text.find(EXPEDIA_HEADER)
    while at >= 0:
        call, end = _expedia_call(text, at, 0)
        found.append((at, call))
        at = text.find(EXPEDIA_HEADER, max(end, at + 1))
    calls = [c for _, c in sorted(found, key=lambda pair: pair[0])]
    for i, call in enumerate(calls):
        call.id = f"call-{i}"
    return calls


def render_fu_call(name: str, arguments: dict) -> str:
    return f"<function.{name}" + "".join(f' {k}="{v}"' for k, v in arguments.items()) + ">"


def render_fu_results(entries: list[dict]) -> str:
    return "\n".join(f"FUNCTION RESULT {e['name']}: {_result_text(e)}" for e in entries)


def markdown_images(text: str) -> list[str]:
    """URLs of the markdown images in an answer: a chat client that renders it fetches each one."""
    return [m.group("url") for m in MARKDOWN_IMAGE.finditer(text)]


TOOL_FORMATS.add("hermes", ToolFormat(parse_hermes, render_hermes_call, render_hermes_results))
TOOL_FORMATS.add("fu", ToolFormat(parse_fu, render_fu_call, render_fu_results))
