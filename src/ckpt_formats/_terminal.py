"""What the ``ckpt-formats`` command line writes to a terminal: never a control character from a file.

File names, tensor names and metadata come from files that may be hostile: a metadata value holding
``ESC [2J`` would clear the screen, a file name with a newline would forge a second line. Every line the CLI
prints goes through :func:`echo` (JSON through :func:`echo_json`), and its log records through
:class:`PrintableFormatter`; each escapes control characters (C0, DEL, C1), Unicode line separators and
bidirectional overrides, and undecodable bytes of file names, as ``\\n``, ``\\x1b``, ``\\u202e``...
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Collection, Sequence
from typing import IO, Any

__all__ = ["PrintableFormatter", "aligned", "configure_logging", "echo", "echo_json", "printable"]

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: object) -> str:
    """``str(text)`` with every control character escaped: one line, safe for a terminal."""
    return _UNSAFE.sub(_escape, str(text))


def echo(text: object = "", *, file: IO[str] | None = None) -> None:
    """Print one line, escaped by :func:`printable` (stdout by default)."""
    print(printable(text), file=file if file is not None else sys.stdout)


def aligned(rows: Sequence[Sequence[object]], right: Collection[int] = ()) -> list[str]:
    """``rows`` (the first one the header) as lines of aligned columns, each cell escaped by
    :func:`printable`; the columns numbered in ``right`` are aligned to the right (numbers)."""
    cells = [[printable(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))] if cells else []
    lines = []
    for row in cells:
        padded = [c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)]
        lines.append("  ".join(padded).rstrip())
    return lines


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON (``json.dumps`` escapes control characters itself)."""
    for line in json.dumps(value, indent=2, ensure_ascii=True).splitlines():
        echo(line)


class PrintableFormatter(logging.Formatter):
    """A log formatter whose message part is escaped (a traceback, added after it, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


def configure_logging(verbose: bool) -> None:
    """The CLI's logging: WARNING and up (DEBUG and tracebacks with ``verbose``) on stderr, escaped.

    Python warnings (torch's notes on pickle protocols, deprecations) go to logging too, and are shown only
    with ``verbose``.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        PrintableFormatter("%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
    )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.DEBUG if verbose else logging.ERROR)
