"""A persistent response cache (SQLite, stdlib): a resumed or repeated run sends no request twice.

The key is the sha256 of the request as sent, in canonical JSON: model name, messages (images by
the sha256 of their pixels plus the encoding settings), and every sampling setting (temperature,
max_tokens, logprobs, top_logprobs). Never the API key or the base URL: the same model name asked
the same thing is one entry, whichever server or key answered it.

Each answer is committed as it arrives, so a killed run keeps every answer it had received.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path


def request_key(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection, used by the client's event-loop thread only; other processes sharing the
        # file wait on SQLite's lock (timeout) rather than fail.
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
        self._db.execute("PRAGMA synchronous=NORMAL")  # a killed process loses nothing committed
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, response TEXT NOT NULL, "
                         "created REAL NOT NULL)")

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, response: dict) -> None:
        self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                         (key, json.dumps(response, separators=(",", ":")), time.time()))

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        self._db.close()
