"""Prose for a terminal: the width lines wrap to, and the wrapping.

Kept apart from the modules that print (``fit``, the CLI's commands) so that a light command
can use it without importing torch.
"""

from __future__ import annotations

import shutil
import textwrap


def width() -> int:
    """The terminal's columns (``COLUMNS`` or the terminal; 80 when not one, 40 at least)."""
    return max(40, shutil.get_terminal_size((80, 24)).columns)


def wrapped(text: str, first: str = "", rest: str = "    ") -> str:
    """``first + text`` wrapped to :func:`width`, continued lines indented by ``rest``; a line
    that fits is returned as it is. Words are never cut (a path or a JSON value longer than a
    line keeps its own line)."""
    if len(first) + len(text) <= width():
        return first + text
    return textwrap.fill(text, width(), initial_indent=first, subsequent_indent=rest,
                         break_long_words=False, break_on_hyphens=False)
