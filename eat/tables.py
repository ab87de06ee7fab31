"""Markdown tables, written one way by the report, the harness and every experiment script. No torch, no pandas:
the light scripts (window coverage, FLOPs recount) import it too."""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence


class TableError(Exception):
    """Bad input of a table script: the message names the file (and row or column) that is wrong."""


def read_results(paths: Sequence[str], need: Sequence[str]) -> List[dict]:
    """The rows of every results CSV in `paths`, each file checked for existence, rows and the `need` columns."""
    rows: List[dict] = []
    for path in paths:
        if not os.path.isfile(path):
            raise TableError(f"{path}: results file not found")
        with open(path, newline="") as f:
            got = list(csv.DictReader(f))
        missing = [c for c in need if got and c not in got[0]]
        if not got or missing:
            raise TableError(f"{path}: " + (f"lacks columns {', '.join(missing)}" if got else "no rows"))
        rows += got
    return rows


def read_harness_results(path: str, need: Sequence[str]) -> List[dict]:
    """read_results of one file whose every row must come from the declared harness (eat.bench): a speed-up table or
    bound is never drawn from rows timed any other way."""
    rows = read_results([path], ["harness", *need])
    bad = [i + 2 for i, r in enumerate(rows) if r["harness"] != "eat.bench"]
    if bad:
        raise TableError(f"{path}:{bad[0]}: not a row of the declared harness (harness={rows[bad[0] - 2]['harness']!r})")
    return rows


NO_DIFFERENCE_EXAMPLES = 3  # a difference of this many evaluation examples or fewer is noise, not a result


def accuracy_delta_text(mean_points: float, per_seed_examples: Sequence[int]) -> str:
    """The accuracy difference of a table: "no measurable difference" when every seed differs by at most
    NO_DIFFERENCE_EXAMPLES examples, else the mean in points; both with each seed's examples."""
    ex = ", ".join(f"{x:+d}" for x in per_seed_examples)
    if all(abs(x) <= NO_DIFFERENCE_EXAMPLES for x in per_seed_examples):
        return f"no measurable difference ({ex} examples)"
    return f"{mean_points:+.2f} points ({ex} examples)"


def table_row(cells: Iterable) -> str:
    """One row; a `|` inside a cell is escaped so it cannot split the cell."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def table_head(header: Sequence[str]) -> List[str]:
    """The header line and the separator (for tables printed row by row as they are measured)."""
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]


def markdown_table(header: Sequence[str], rows: Iterable[Iterable]) -> str:
    return "\n".join(table_head(header) + [table_row(r) for r in rows])


def publish(lines: Sequence[str], out: Optional[str]) -> str:
    """Print a summary and, when `out` is given, write it there (one trailing newline; through a temporary file,
    so a killed script leaves the previous summary, never half of a new one)."""
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(f"{out}.tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
    return text
