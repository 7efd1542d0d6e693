"""The one escaping rule for everything written for a person: text someone typed (labels, prompts, file and folder
names, model names, "also forget as" texts) is always data, never markup, in whatever format it lands in.

* HTML (reports, the app's HTML components): :func:`html_text` -- ``& < > " '`` escaped, so it is text inside an
  element and inside a quoted attribute alike.
* Markdown (model cards, the app's Markdown components): :func:`md_text` -- HTML escaped as above (Markdown passes
  raw HTML through) and Markdown's own syntax neutralised (no links, images, emphasis, code spans, table cells or
  line breaks).
* JSON inside a ``<script>`` element (the report's plot data): :func:`script_json` -- ``<``, ``>``, ``&`` and the
  line separators written as ``\\uXXXX``, so no ``</script>`` or ``<!--`` can close or bend the element.

Every writer uses these three and nothing else; the tests feed hostile text through each sink.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

_MD_SPECIAL = re.compile(r"([\\`*_\[\]()|~])")
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _cut(value: object, limit: int | None) -> str:
    out = str(value)
    return out if limit is None or len(out) <= limit else out[: limit - 1] + "…"


def html_text(value: object, limit: int | None = None) -> str:
    """``value`` as HTML text (element content or a quoted attribute), cut to ``limit`` characters."""
    return html.escape(_cut(value, limit), quote=True)


def md_text(value: object, limit: int | None = None) -> str:
    """``value`` as Markdown text: no HTML, no Markdown syntax, one line (newlines become spaces)."""
    flat = " ".join(_cut(value, limit).splitlines())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(flat, quote=True))


def script_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps(obj)`` that is safe inside an HTML ``<script>`` element."""
    raw = json.dumps(obj, **kwargs)
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_UNSAFE[m.group(0)], raw)
