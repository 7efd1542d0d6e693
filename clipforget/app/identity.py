"""Who is calling: workspace tokens the server issues and signs, and that a client can neither forge nor read.

A workspace id is random (:meth:`Workspaces.new_id`); a client holds a *token*, ``<id>.<signature>``, the signature an
HMAC-SHA256 of the id and the token's purpose under a key that never leaves the server (``<cache>/workspace.key``,
mode 0600). Purposes: **browser** (the ``HttpOnly`` cookie :class:`clipforget.app.security.SecurityMiddleware` sets)
and **api** (``/new_api_token``, sent back in the ``X-Clipforget-Token`` header); one cannot stand in for the other.
Nothing the client sends in the clear names a workspace. See docs/security.md ("Identity: workspaces").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from clipforget.core.errors import DataError

from .workspaces import Workspaces

COOKIE = "clipforget_ws"
HEADER = "x-clipforget-token"
PURPOSES = ("browser", "api")


class NoWorkspace(DataError):
    """The request carries no valid workspace token (the message says how to get one)."""


def load_key(path: Path) -> bytes:
    """The signing key at ``path``, created (32 random bytes, owner-only permissions) when missing."""
    path = Path(path)
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(32))
        try:
            os.link(tmp, path)  # first writer wins when two processes start at once
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    os.chmod(path, 0o600)
    key = path.read_bytes()
    if len(key) < 32:
        raise DataError(f"workspace key {path.name} is too short: delete it to make a new one")
    return key


class WorkspaceTokens:
    """Issues and checks workspace tokens (see the module docstring)."""

    def __init__(self, key: bytes):
        self._key = key

    @classmethod
    def from_file(cls, path: Path) -> WorkspaceTokens:
        return cls(load_key(path))

    def _signature(self, workspace: str, purpose: str) -> str:
        mac = hmac.new(self._key, f"clipforget-workspace|{purpose}|{workspace}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")

    def issue(self, workspace: str, purpose: str = "browser") -> str:
        if purpose not in PURPOSES:
            raise ValueError(f"unknown token purpose {purpose!r}")
        if not Workspaces.valid(workspace):
            raise DataError("invalid workspace id")
        return f"{workspace}.{self._signature(workspace, purpose)}"

    def verify(self, token: str | None, purpose: str = "browser") -> str | None:
        """The workspace id ``token`` names, or ``None`` when it is missing, malformed or not signed by this key."""
        if not token or len(token) > 200 or token.count(".") != 1:
            return None
        workspace, signature = token.split(".")
        if not Workspaces.valid(workspace):
            return None
        if not hmac.compare_digest(signature, self._signature(workspace, purpose)):
            return None
        return workspace

    def image_handle(self, workspace: str, gallery: str, row: int) -> str:
        """A handle of gallery image ``row`` that only ``workspace`` can use (a picked image in the retrieval panel):
        ``<row>-<signature>``; another workspace's handle, or a made-up one, resolves to nothing."""
        return f"{int(row)}-{self._signature(f'{gallery}|{int(row)}', f'image|{workspace}')}"

    def image_row(self, workspace: str, gallery: str, handle: object) -> int | None:
        """The gallery row ``handle`` names for ``workspace`` (``None``: not one of its handles)."""
        if not isinstance(handle, str) or len(handle) > 100 or "-" not in handle:
            return None
        row, _, signature = handle.partition("-")
        if not row.isdigit() or len(row) > 9:
            return None
        expected = self._signature(f"{gallery}|{int(row)}", f"image|{workspace}")
        return int(row) if hmac.compare_digest(signature, expected) else None

    def resolve(self, header: str | None, cookie: str | None) -> str | None:
        """The workspace a request names: its API header token when it sends one (a bad header names nothing, the
        cookie does not stand in for it), else its browser cookie; ``None`` when that token is not valid."""
        return self.verify(header, "api") if header else self.verify(cookie, "browser")

    def owner(self, headers, cookies) -> str:
        """The caller's workspace: a valid API header token, else a valid browser cookie; else :class:`NoWorkspace`.

        ``headers`` / ``cookies`` are mappings (a ``gr.Request``'s or a Starlette request's).
        """
        header = (headers or {}).get(HEADER)
        owner = self.resolve(header, (cookies or {}).get(COOKIE))
        if owner is None and header:
            raise NoWorkspace("the X-Clipforget-Token header is not a valid token of this server")
        if owner is None:
            raise NoWorkspace("no workspace: reload the page (cookies must be enabled); API clients: keep the "
                              "cookie the server sets, or call /new_api_token and send the token in the "
                              "X-Clipforget-Token header")
        return owner
