"""Text the app shows: user-typed words are shown as text (never as HTML or Markdown), server paths never at all."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from clipforget.core.escape import html_text, md_text

_ABS_PATH = re.compile(r"(?<![\w.:/>…])(?:/|~/)[^\s'\"`<>|,;)\]]*")
_UNDER_ROOT = re.compile(r"(<[a-z]+>)/[^\s'\"`<>|,;)\]]*/([^\s'\"`<>|,;)\]/]+)")
_WIN_PATH = re.compile(r"\b[A-Za-z]:\\[^\s'\"`<>|,;)\]]*")


def md(value: object, limit: int = 200) -> str:
    """``value`` for a Markdown component (:func:`clipforget.core.escape.md_text`), cut to ``limit``."""
    return md_text(value, limit)


def text(value: object, limit: int = 500) -> str:
    """``value`` for an HTML component (:func:`clipforget.core.escape.html_text`), cut to ``limit``."""
    return html_text(value, limit)


class Scrubber:
    """Replaces server paths in messages: known folders by a name (``<cache>``, ``<data>``) and what lies between
    the folder and the file by ``…`` (a workspace id in ``<cache>/sessions/<id>/…`` never reaches a client), any
    other absolute path by its last component."""

    def __init__(self, roots: Iterable[tuple[str, str | os.PathLike | None]] = ()):
        named = [(str(Path(p).expanduser().resolve()), name) for name, p in roots if p]
        named += [(str(Path(tempfile.gettempdir()).resolve()), "<tmp>"), (str(Path.home()), "<home>")]
        self._roots = sorted(named, key=lambda item: len(item[0]), reverse=True)

    def __call__(self, message: object) -> str:
        out = str(message)
        for root, name in self._roots:
            if root not in ("/", ""):
                out = out.replace(root, name)
        out = _UNDER_ROOT.sub(lambda m: f"{m.group(1)}/…/{m.group(2)}", out)
        out = _ABS_PATH.sub(lambda m: _last(m.group(0)), out)
        return _WIN_PATH.sub(lambda m: _last(m.group(0).replace("\\", "/")), out)


def _last(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name or "…"
