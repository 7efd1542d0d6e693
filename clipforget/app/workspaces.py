"""Workspaces: every browser (or API client) works in its own folder; ids are unguessable."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

from clipforget.core.errors import DataError


class Workspaces:
    """``<root>/<workspace id>/`` holds a workspace's uploads and exports; runs record their owner's id."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def new_id() -> str:
        return "w" + secrets.token_urlsafe(16).replace("-", "x").replace("_", "y")

    def path(self, owner: str) -> Path:
        if not owner or not re.fullmatch(r"[A-Za-z0-9]{8,64}", owner):
            raise DataError("invalid workspace id")
        path = self.root / owner
        path.mkdir(parents=True, exist_ok=True)
        return path
