"""The top of the page and of the Markdown, read before any table: what was run (models, workloads,
where the data came from, how the runs ended) and each table's headline number, the highest measured
value of its headline column with the row it comes from."""

from __future__ import annotations

import re
from collections import Counter

from mmsafety.leaderboard.blocks import Block

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
ABOUT_DEFAULT = "One row per run; the columns name what each number is."


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def what_ran(blocks: list[Block]) -> list[str]:
    """Lines saying what the measured rows (not the papers') are: runs, models, tables, data, statuses."""
    measured = [(block, row) for block in blocks for row in block.rows if not row.reported]
    if not measured:
        return ["No measured runs: only rows the papers report."]
    rows = list({id(row): row for _, row in measured}.values())
    models = sorted({row.model for row in rows})
    tables = list(dict.fromkeys(block.section.title for block, _ in measured))
    data = Counter(row.data or "unknown" for row in rows)
    statuses = Counter(row.status for row in rows)
    shown_models = ", ".join(models[:12]) + (f" and {len(models) - 12} more" if len(models) > 12 else "")
    lines = [f"{_plural(len(rows), 'run')} of {_plural(len(models), 'model')}: {shown_models}.",
             f"Workloads: {'; '.join(tables)}.",
             "Data: " + ", ".join(f"{kind} ({n})" for kind, n in sorted(data.items()))
             + (" (synthetic: generated data that checks the harness, not a benchmark result)" if "synthetic" in data else "")
             + ".",
             "Status: " + ", ".join(f"{status} ({n})" for status, n in sorted(statuses.items())) + "."]
    reported = sum(row.reported for block in blocks for row in block.rows)
    if reported:
        lines.append(f"Beside them, {_plural(reported, 'row')} as the papers report them.")
    return lines


def _value(cell) -> float | None:
    if isinstance(cell, bool) or cell is None:
        return None
    if isinstance(cell, (int, float)):
        return float(cell)
    found = _NUMBER.match(str(cell).strip())
    return float(found.group(0)) if found else None


def headline(block: Block) -> str | None:
    """`<title>: highest <column> 81.2 [62.5, 93.8] (model, data, group...) of N measured rows`, or
    None when the section names no headline column or no measured row has a number in it."""
    column = block.section.headline
    if not column:
        return None
    scored = [(value, cells) for row, cells in zip(block.rows, block.table)
              if not row.reported and (value := _value(cells.get(column))) is not None]
    if not scored:
        return None
    _, best = max(scored, key=lambda pair: pair[0])
    shown = str(best.get(column))
    if best.get(f"{column}_ci95"):
        shown += f" {best[f'{column}_ci95']}"
    who = [str(best[c]) for c in ("model", "surrogate", "victim") if best.get(c)]
    who = [f"crafted on {who[0]}, victim {who[1]}"] if "model" not in best and len(who) == 2 else who
    where = who + [f"{g} {best.get(g)}" for g in block.section.group_by if best.get(g)]
    where += [str(best.get("data"))] if best.get("data") else []
    return f"{block.title}: highest {column} {shown} ({', '.join(where)}) of {_plural(len(scored), 'measured row')}"


def headlines(blocks: list[Block]) -> list[str]:
    return [line for block in blocks if (line := headline(block))]


def about(block: Block) -> str:
    return block.section.about or ABOUT_DEFAULT
