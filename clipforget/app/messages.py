"""Text the app shows: user-typed words are shown as text (never as HTML or Markdown), server paths never at all."""

from __future__ import annotations

import html
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

_MD_SPECIAL = re.compile(r"([\\`*_\[\]()|~])")
_ABS_PATH = re.compile(r"(?<![\w.:/>])(?:/|~/)[^\s'\"`<>|,;)\]]*")
_WIN_PATH = re.compile(r"\b[A-Za-z]:\\[^\s'\"`<>|,;)\]]*")


def md(text: object, limit: int = 200) -> str:
    """``text`` for a Markdown component: HTML escaped and Markdown syntax neutralised, cut to ``limit``."""
    value = str(text)
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return _MD_SPECIAL.sub(r"\\\1", html.escape(value, quote=False))


def text(value: object, limit: int = 500) -> str:
    """``value`` for an HTML component: escaped, cut to ``limit``."""
    value = str(value)
    return html.escape(value if len(value) <= limit else value[: limit - 1] + "…", quote=True)


class Scrubber:
    """Replaces server paths in messages: known folders by a name (``<cache>``, ``<data>``), any other absolute
    path by its last component."""

    def __init__(self, roots: Iterable[tuple[str, str | os.PathLike | None]] = ()):
        named = [(str(Path(p).expanduser().resolve()), name) for name, p in roots if p]
        named += [(str(Path(tempfile.gettempdir()).resolve()), "<tmp>"), (str(Path.home()), "<home>")]
        self._roots = sorted(named, key=lambda item: len(item[0]), reverse=True)

    def __call__(self, message: object) -> str:
        out = str(message)
        for root, name in self._roots:
            if root not in ("/", ""):
                out = out.replace(root, name)
        out = _ABS_PATH.sub(lambda m: _last(m.group(0)), out)
        return _WIN_PATH.sub(lambda m: _last(m.group(0).replace("\\", "/")), out)


def _last(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name or "…"
