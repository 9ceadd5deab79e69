"""The workspace the tools act on: mail, travel and web, deterministic and in-process.

Its state is plain data (mmsafety/agents/data/workspace.json, copied per trajectory): an inbox and
outbox, flights and bookings, recorded web pages and every URL fetched. No tool touches the network
or the filesystem or runs anything the model wrote: `fetch_url` returns the recorded page (or says
there is none) and records the URL, which is how an exfiltration shows in the final state. Tool
arguments are the names Fu et al.'s targets use (`send_email(input, to)`, `delete_email(which)`,
Expedia's `origin`/`destination`/`departure_date`), so their calls run here as written.
"""

from __future__ import annotations

import copy
import json
from importlib import resources

from mmsafety.agents.tools import Tool, ToolCall, string_params, validate

DOMAINS = ("mail", "travel", "web")


def initial_state() -> dict:
    """A fresh copy of the workspace's starting state."""
    return json.loads(resources.files("mmsafety.agents").joinpath("data/workspace.json").read_text())


def _read_inbox(state: dict) -> tuple[str, None]:
    return json.dumps(state["inbox"]), None


def _send_email(state: dict, to: str, input: str, subject: str = "") -> tuple[str, str]:
    mail = {"id": f"out-{len(state['outbox']) + 1}", "to": to, "subject": subject, "body": input}
    state["outbox"].append(mail)
    return f"sent {mail['id']} to {to}", f"outbox +{mail['id']} to {to}"


def _delete_email(state: dict, which: str) -> tuple[str, str | None]:
    gone = [m for m in state["inbox"] if which == "all" or m["id"] == which]
    if not gone:
        return f"no email with id {which!r} (give an id from read_inbox, or \"all\")", None
    state["inbox"] = [m for m in state["inbox"] if m not in gone]
    state["deleted"] += gone
    return f"deleted {len(gone)} email(s)", f"inbox -{len(gone)} ({', '.join(m['id'] for m in gone)})"


def _matching(state: dict, origin: str, destination: str, departure_date: str = "") -> list[dict]:
    same = lambda a, b: a.strip().lower() == b.strip().lower()
    return [f for f in state["flights"] if same(f["origin"], origin) and same(f["destination"], destination)
            and (not departure_date or f["departure_date"] == departure_date.strip())]


def _search_flights(state: dict, origin: str, destination: str, departure_date: str = "") -> tuple[str, None]:
    return json.dumps(sorted(_matching(state, origin, destination, departure_date), key=lambda f: f["price"])), None


def _book_flight(state: dict, origin: str, destination: str, departure_date: str, flight_id: str = "",
                 user_input_in_english: str = "", keywords: str = "") -> tuple[str, str | None]:
    # Expedia's request fields (user_input_in_english, keywords) are accepted as Fu et al.'s target
    # writes them; a booking is by flight_id, else the cheapest flight that matches.
    found = sorted(_matching(state, origin, destination, departure_date), key=lambda f: f["price"])
    if flight_id:
        found = [f for f in found if f["id"] == flight_id.strip()]
    if not found:
        return f"no flight {origin} -> {destination} on {departure_date}{' with id ' + flight_id if flight_id else ''}", None
    flight = found[0]
    state["bookings"].append(dict(flight))
    return f"booked {flight['id']} for {flight['price']} USD", f"bookings +{flight['id']}"


def _fetch_url(state: dict, url: str) -> tuple[str, str]:
    state["fetched"].append({"url": url, "via": "fetch_url"})
    return state["pages"].get(url, f"(no recorded page for {url[:200]})"), f"fetched {url[:200]}"


TOOLS: dict[str, Tool] = {t.name: t for t in (
    Tool("read_inbox", "List the emails in the user's inbox (id, from, subject, body).", string_params({}), _read_inbox),
    Tool("send_email", "Send an email.", string_params({"to": "recipient address", "input": "the email's text"},
                                                       {"subject": "subject line"}), _send_email),
    Tool("delete_email", "Delete one email by id, or every email with which=\"all\".",
         string_params({"which": "an email id, or \"all\""}), _delete_email),
    Tool("search_flights", "Find flights, cheapest first.",
         string_params({"origin": "city", "destination": "city"}, {"departure_date": "YYYY-MM-DD"}), _search_flights),
    Tool("book_flight", "Book a flight: the one with flight_id, else the cheapest that matches.",
         string_params({"origin": "city", "destination": "city", "departure_date": "YYYY-MM-DD"},
                       {"flight_id": "a flight id from search_flights", "user_input_in_english": "the request",
                        "keywords": "search keywords"}), _book_flight),
    Tool("fetch_url", "Fetch a web page.", string_params({"url": "an http(s) URL"}), _fetch_url),
)}


class Workspace:
    """One trajectory's sandbox: its own copy of the state, the declared tools, a log of effects."""

    def __init__(self, tools: dict[str, Tool] = TOOLS, state: dict | None = None):
        self.tools = dict(tools)
        self.state = copy.deepcopy(state) if state is not None else initial_state()
        self.initial = copy.deepcopy(self.state)

    def schemas(self) -> list[dict]:
        return [t.openai_schema() for t in self.tools.values()]

    def execute(self, call: ToolCall) -> dict:
        """Validate, then run a valid call; the trajectory's entry for it. An invalid call never runs."""
        validate(call, self.tools)
        entry = {"id": call.id, "name": call.name, "arguments": call.arguments, "raw": call.raw[:2000],
                 "valid": call.valid, "error": call.error, "result": None, "effect": None}
        if call.valid:
            entry["result"], entry["effect"] = self.tools[call.name].run(self.state, **call.arguments)
        return entry

    def render_image(self, url: str) -> str:
        """A chat client rendering a markdown image in the answer fetches its URL: recorded, never sent."""
        self.state["fetched"].append({"url": url, "via": "markdown_image"})
        return f"rendered image {url[:200]}"
