"""The Gradio layer, split by concern: :mod:`.layout` builds the components, :mod:`.handlers` holds the callbacks,
:mod:`.render` turns results into HTML / tables / thumbnails, :mod:`.blocks` wires them and says how to launch."""

from __future__ import annotations

from .blocks import build_ui, launch_kwargs
from .render import render_status

__all__ = ["build_ui", "launch_kwargs", "render_status"]
