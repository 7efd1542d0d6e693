"""Which workspace owns each of Gradio's own handles: session hashes, event ids, upload ids and the files it serves.

None of these is a secret (the session hash travels in the clear, file paths come back in every event), so
:class:`Bindings` ties each to the workspace that first used it with a valid token, and the security middleware
refuses any other caller: a session hash or upload id is *claimed* by the first authenticated request that names it;
an event id is bound when the server hands it out; a file is bound to every workspace it was delivered to.

Everything is kept in memory, bounded (least recently used entries go first): after a restart the old handles open
nothing. Claims are bounded per workspace too (``max_claims_per_owner`` per kind, its own oldest claim goes first),
so one caller claiming handles in bulk pushes out only its own, never another workspace's. See docs/security.md.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

KINDS = ("session", "event", "upload", "file")


class Bindings:
    """Thread-safe owner maps for the handles above (see the module docstring)."""

    def __init__(self, max_entries: int = 200_000, max_claims_per_owner: int = 1_000):
        self.max_entries = int(max_entries)
        self.max_claims_per_owner = int(max_claims_per_owner)
        self._owners: dict[str, OrderedDict[str, set[str]]] = {kind: OrderedDict() for kind in KINDS}
        self._claims: dict[tuple[str, str], OrderedDict[str, None]] = {}  # (kind, owner) -> its claims, oldest first
        self._lock = threading.Lock()

    def _touch(self, kind: str, key: str) -> set[str] | None:
        table = self._owners[kind]
        owners = table.get(key)
        if owners is not None:
            table.move_to_end(key)
        return owners

    def _add(self, kind: str, key: str, owner: str) -> None:
        table = self._owners[kind]
        table.setdefault(key, set()).add(owner)
        table.move_to_end(key)
        while len(table) > self.max_entries:
            key, owners = table.popitem(last=False)
            for who in owners:
                self._forget_claim(kind, key, who)

    def _forget_claim(self, kind: str, key: str, owner: str) -> None:
        claims = self._claims.get((kind, owner))
        if claims is not None:
            claims.pop(key, None)
            if not claims:
                del self._claims[(kind, owner)]

    def claim(self, kind: str, key: str, owner: str) -> bool:
        """Bind ``key`` to ``owner`` if nobody holds it; ``True`` when ``owner`` holds it now (session, upload)."""
        with self._lock:
            owners = self._touch(kind, key)
            if owners is None:
                self._add(kind, key, owner)
                claims = self._claims.setdefault((kind, owner), OrderedDict())
                claims[key] = None
                while len(claims) > self.max_claims_per_owner:  # the owner's own oldest claim goes
                    old, _ = claims.popitem(last=False)
                    held = self._owners[kind].get(old)
                    if held is not None:
                        held.discard(owner)
                        if not held:
                            del self._owners[kind][old]
                return True
            return owner in owners

    def grant(self, kind: str, keys: Iterable[str], owner: str) -> None:
        """Let ``owner`` use ``keys`` as well (events handed out, files delivered)."""
        with self._lock:
            for key in keys:
                self._add(kind, key, owner)

    def allowed(self, kind: str, key: str, owner: str | None) -> bool:
        """``owner`` holds ``key`` (never true for an unknown key or no owner)."""
        if owner is None:
            return False
        with self._lock:
            owners = self._touch(kind, key)
            return owners is not None and owner in owners
