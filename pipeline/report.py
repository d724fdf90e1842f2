"""The one shape every stage's terminal summary takes: a titled two-column table of names and values."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table


def report_table(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    table = Table(title=title)
    table.add_column("")
    table.add_column("", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table
