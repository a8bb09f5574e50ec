"""Output of the admin commands: a table drawn by rich on a terminal, plain columns otherwise, or JSON.

Plain text is for pipes and scripts (``aegis status | grep``): no colour, no box drawing, one
line per row. rich is imported only when a table is drawn on a terminal, so the client-only
install (which has no rich) prints plain text, and importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

Cell = str | int | float | None


def show_cell(cell: Cell) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, float):
        return f"{cell:.1f}"
    return str(cell)


def plain_table(columns: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """Columns padded to their widest cell, two spaces apart; trailing spaces trimmed."""
    shown = [list(columns)] + [[show_cell(cell) for cell in row] for row in rows]
    widths = [max(len(line[index]) for line in shown) for index in range(len(columns))]
    return "\n".join("  ".join(text.ljust(width) for text, width in zip(line, widths)).rstrip() for line in shown)


def _rich_console(stream: TextIO) -> Any:
    """rich's Console for ``stream``, or None when rich is not installed (the client-only install)."""
    try:
        from rich.console import Console
    except ModuleNotFoundError:
        return None
    return Console(file=stream, highlight=False)


def table(
    columns: Sequence[str], rows: Sequence[Sequence[Cell]], *, title: str | None = None, stream: TextIO | None = None
) -> None:
    """Print ``rows`` under ``columns``: rich on a terminal, plain text otherwise."""
    out = sys.stdout if stream is None else stream
    console = _rich_console(out) if out.isatty() else None
    if console is None:
        if title:
            print(title, file=out)
        print(plain_table(columns, rows), file=out)
        return
    from rich import box
    from rich.table import Table
    from rich.text import Text

    # No vertical rules, to leave the width to the cells; and a cell too wide for the terminal
    # folds onto a second line rather than being cut with an ellipsis: addresses are copied from here.
    drawn = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for column in columns:
        drawn.add_column(column, overflow="fold")
    for row in rows:
        # Text, not str: a key or node name like "[bold]" must print as it is, not as rich markup.
        drawn.add_row(*(Text(show_cell(cell)) for cell in row))
    console.print(drawn)


def as_json(data: Any, stream: TextIO | None = None) -> None:
    print(json.dumps(data, indent=2, sort_keys=False), file=sys.stdout if stream is None else stream)


def note(message: str) -> None:
    """A line for the operator beside the output (on stderr, so a pipe of stdout stays data)."""
    print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def progress(text: str) -> Iterator[Callable[[str], None]]:
    """While the block runs, a spinner with ``text`` on a terminal (rich), updated by the function
    yielded; elsewhere that function prints the updates on stderr, one every 2 s at most, the first
    after 1 s (a step that finishes at once prints nothing)."""
    console = _rich_console(sys.stderr) if sys.stderr.isatty() else None
    if console is None:
        next_line = time.monotonic() + 1.0

        def throttled(line: str) -> None:
            nonlocal next_line
            if time.monotonic() >= next_line:
                note(line)
                next_line = time.monotonic() + 2.0

        yield throttled
        return
    from rich.text import Text

    with console.status(Text(text)) as status:
        yield lambda line: status.update(Text(line))
