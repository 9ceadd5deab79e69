"""The agent loop: the model answers, its tool calls run in the sandbox, the results go back, up to N turns.

`run_episodes` runs one trajectory per user task, all on the same image (the attacked or the clean
one, in the user's first turn), batching each turn's answers over the trajectories still going. A
trajectory ends when an answer holds no tool call (the final answer) or at `max_turns`, which the
trajectory states (`turn_limit_reached`). Markdown images in an answer are "rendered": their URLs
are recorded as fetched (never sent), as a chat client that shows the answer would fetch them.

A model is `respond(image, conversations) -> answers`: each conversation is OpenAI-style messages
(user / assistant / tool). `TranscriptAgent` drives any model that only generates text for an image
and a prompt: later turns carry the earlier answers and results in the user's text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

from mmsafety.agents.environment import Workspace
from mmsafety.agents.formats import ToolFormat, markdown_images
from mmsafety.agents.tasks import UserTask, holds, url_escape

Respond = Callable[[object, Sequence[list[dict]]], list[str]]


@dataclass
class Episode:
    task: UserTask
    workspace: Workspace
    messages: list[dict]
    turns: list[dict] = field(default_factory=list)
    finished: bool = False

    def answer(self) -> str:
        """Everything the assistant said (a chat client shows every assistant message)."""
        return "\n".join(t["output"] for t in self.turns)


def run_episodes(respond: Respond, image, tasks: Sequence[UserTask], fmt: ToolFormat, max_turns: int = 4,
                 render_images: bool = True) -> list[Episode]:
    """One trajectory per task on `image`; every call validated before it runs, invalid ones recorded."""
    if max_turns < 1:
        raise ValueError("max_turns must be >= 1")
    episodes = [Episode(t, Workspace(), [{"role": "user", "content": t.prompt}]) for t in tasks]
    for turn in range(max_turns):
        going = [e for e in episodes if not e.finished]
        if not going:
            break
        outputs = respond(image, [e.messages for e in going])
        for episode, text in zip(going, outputs):
            calls = fmt.parse(text)
            entries = [episode.workspace.execute(call) for call in calls]
            rendered = markdown_images(text) if render_images else []
            for url in rendered:
                episode.workspace.render_image(url)
            episode.turns.append({"turn": turn, "output": text, "calls": entries, "rendered_images": rendered})
            episode.messages.append({"role": "assistant", "content": text, "tool_calls": entries})
            if entries:
                episode.messages.append({"role": "tool", "content": fmt.render_results(entries), "entries": entries})
            else:
                episode.finished = True
    return episodes


def judge_episode(episode: Episode, injection: list[dict] | None, info: dict) -> dict:
    """The trajectory as a record row: user goal (`utility`), injection goal (`executed`), call counts."""
    slots = {**{k: str(v) for k, v in info.items()}, "prompt": episode.task.prompt.strip(),
             "prompt_url": url_escape(episode.task.prompt)}
    ws, answer = episode.workspace, episode.answer()
    calls = [c for t in episode.turns for c in t["calls"]]
    row = {"task": episode.task.id, "prompt": episode.task.prompt,
           "utility": holds(episode.task.checks, ws.state, ws.initial, answer, slots),
           "calls": len(calls), "invalid_calls": sum(not c["valid"] for c in calls),
           "turns": len(episode.turns), "turn_limit_reached": not episode.finished, "trajectory": episode.turns,
           "final_state": {k: ws.state[k] for k in ("outbox", "bookings", "fetched")}
           | {"deleted": [m["id"] for m in ws.state["deleted"]]}}
    if injection is not None:
        row["executed"] = holds(injection, ws.state, ws.initial, answer, slots)
    return row


def transcript(messages: list[dict]) -> str:
    """A conversation as one user text: the request, then each earlier answer and its tool results.
    The first turn is the user's message alone, exactly as the attack saw it."""
    parts = [messages[0]["content"]]
    for m in messages[1:]:
        parts.append(("ASSISTANT: " if m["role"] == "assistant" else "") + m["content"])
    return "\n".join(parts)


class TranscriptAgent:
    """`respond` for a model that generates text for (image, prompt) pairs: the image in every turn
    (it is in the user's first message, which every turn carries), the conversation as text."""

    def __init__(self, generate: Callable[[list, list[str], int], list[str]], max_new_tokens: int = 128,
                 batch_size: int = 16):
        self.generate, self.max_new_tokens, self.batch_size = generate, max_new_tokens, batch_size

    def __call__(self, image, conversations: Sequence[list[dict]]) -> list[str]:
        prompts = [transcript(c) for c in conversations]
        out: list[str] = []
        for i in range(0, len(prompts), self.batch_size):
            chunk = prompts[i:i + self.batch_size]
            out += self.generate([image] * len(chunk), chunk, self.max_new_tokens)
        return out
