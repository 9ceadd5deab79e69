"""The page's per-sample browser (like inspect_ai's log viewer): for each row, its samples with a
thumbnail, the caption or prompt, the model's answer and the verdict.

A section supplies the views (`Section.samples`); for one that does not, the core shows the fields of
the row's samples.jsonl as they are, so every workload has a browser. Every text is data and may be
adversarial (meme text is written to attack models): it is escaped, never interpreted.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

from mmsafety.images import ImageRejected, load_image
from mmsafety.leaderboard.collect import Row
from mmsafety.leaderboard.views import SampleView, Section

THUMB = 96
SAMPLES_PER_ROW = 24
EXCHANGES_PER_SAMPLE = 8
TEXT_LIMIT = 600


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def thumbnail(path: Path, size: int = THUMB) -> str | None:
    """A small PNG of an image as a data URI, or None when the file is missing or not a readable image
    (the robust loader: a damaged file in a runs folder must not stop the export)."""
    try:
        im = load_image(path).image
    except ImageRejected:
        return None
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return data_uri(buf.getvalue())


def _short(text: str, limit: int = TEXT_LIMIT) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def generic_views(row: Row, key_fields: tuple[str, ...]) -> list[SampleView]:
    """Views of a row's samples for a section that supplies none: the sample key, its status, and every
    other field as `name: value` (JSON), image files it names inside the run folder as thumbnails."""
    views = []
    for art in row.artifacts:
        folder = Path(art["folder"])
        for s in art.get("samples", []):
            key = " / ".join(str(s.get(k)) for k in key_fields) or "?"
            images = [(k, folder / v) for k, v in s.items()
                      if isinstance(v, str) and v.lower().endswith((".png", ".jpg", ".jpeg")) and ".." not in Path(v).parts
                      and not Path(v).is_absolute()]
            fields = [(k, _short(json.dumps(v, ensure_ascii=False, default=str))) for k, v in s.items()
                      if k not in key_fields and k != "status"]
            views.append(SampleView(key, str(s.get("status", "ok")), images,
                                    [(k, v, "") for k, v in fields]))
    return views


def row_views(section: Section, row: Row, key_fields: tuple[str, ...]) -> list[SampleView]:
    if row.reported:
        return []
    if section.samples is not None:
        return section.samples(row)
    return generic_views(row, key_fields)


def _view_html(view: SampleView) -> str:
    thumbs = "".join(f'<img alt="{html.escape(alt)}" title="{html.escape(alt)}" src="{uri}">'
                     for alt, path in view.images if (uri := thumbnail(Path(path))))
    lines = []
    for prompt, answer, verdict in view.exchanges[:EXCHANGES_PER_SAMPLE]:
        lines.append(f'<div class="ex"><div class="q">{html.escape(_short(str(prompt)))}</div>'
                     f'<div class="a">{html.escape(_short(str(answer)))}</div>'
                     + (f'<div class="v">{html.escape(str(verdict))}</div>' if verdict else "") + "</div>")
    more = len(view.exchanges) - EXCHANGES_PER_SAMPLE
    if more > 0:
        lines.append(f'<div class="more">and {more} more</div>')
    return (f'<div class="sample"><div class="head"><b>{html.escape(view.key)}</b> '
            f'<span class="verdict">{html.escape(view.verdict)}</span></div>'
            f'<div class="thumbs">{thumbs}</div>{"".join(lines)}</div>')


def browser_html(title: str, label: str, views: list[SampleView]) -> str:
    """One row's samples, folded (`<details>`): the first SAMPLES_PER_ROW of them."""
    shown = views[:SAMPLES_PER_ROW]
    count = f"{len(shown)} of {len(views)} samples" if len(views) > len(shown) else f"{len(views)} samples"
    cards = "".join(_view_html(v) for v in shown)
    return (f'<details class="samples"><summary>{html.escape(title)}: {html.escape(label)} ({count})</summary>'
            f'<div class="grid">{cards}</div></details>')
