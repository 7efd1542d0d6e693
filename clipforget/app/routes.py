"""Every HTTP route the app server answers, with the guard that decides who may use it: the route policy as data.

The security middleware (:mod:`clipforget.app.security`) looks each request up here; a route that is not listed is
answered 404 before Gradio sees it, so a new Gradio route stays closed until it is reviewed and listed. The table in
docs/security.md is this table. Guards: ``public`` -- no workspace data; ``page`` -- public, a page load refreshes the
workspace cookie; ``session`` -- a valid token, and every session hash, event id, upload id and input file the request
names must be the caller's (:class:`clipforget.app.bindings.Bindings`); ``upload`` -- a token, the stored files bound
to the caller; ``file`` -- only files given to the caller's workspace; ``download`` -- the caller's own exports and
reports; ``thumbnail`` -- any valid token, nothing outside the thumbnail folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GUARDS = ("public", "page", "session", "upload", "file", "download", "thumbnail")
API = "/gradio_api"
ID = r"[A-Za-z0-9_.\-]{1,200}"


@dataclass(frozen=True)
class Route:
    """One route: methods, a path pattern (full match, named groups ``session`` / ``event`` hold handles), the
    guard, what answers the route, and what the guard does with the response (``binds``: ``event`` = its
    ``event_id``, ``files`` = the file paths it returns, ``stream`` = files in a server-sent event stream)."""

    name: str
    methods: tuple[str, ...]
    pattern: str
    guard: str
    binds: tuple[str, ...] = ()
    purpose: str = ""

    def __post_init__(self):
        if self.guard not in GUARDS:
            raise ValueError(f"unknown guard {self.guard!r}")
        object.__setattr__(self, "_regex", re.compile(self.pattern, re.DOTALL))

    def match(self, method: str, path: str) -> re.Match | None:
        return self._regex.fullmatch(path) if method in self.methods else None  # type: ignore[attr-defined]


GET = ("GET", "HEAD")
POST = ("POST",)

ROUTES: tuple[Route, ...] = (
    Route("page", GET, r"/", "page", purpose="the app's HTML page"),
    Route("config", GET, r"/config/?", "public", purpose="the page's layout (components, no user data)"),
    Route("static", GET, r"/(?:static|assets|svelte)/.*", "public", purpose="Gradio's front-end files"),
    Route("icons", GET, r"/(?:favicon\.ico|theme\.css|robots\.txt|manifest\.json|pwa_icon(?:/\d{1,4})?)", "public",
          purpose="icon, theme, robots, web manifest"),
    Route("api-info", GET, rf"(?:{API})?/(?:info/?|openapi\.json)", "public",
          purpose="the API description (\"Use via API\")"),
    Route("theme", GET, rf"{API}/theme\.css", "public", purpose="the theme's CSS"),
    Route("status", GET, rf"{API}/(?:queue/status|startup-events|app_id/?|user/?|login_check/?|token/?)", "public",
          purpose="queue length estimate, start-up hook, app id; no log-in is configured, so user / token say so"),
    Route("join", POST, rf"{API}/queue/join", "session", ("event",), "start an event (the page and gradio_client)"),
    Route("queue-data", GET, rf"{API}/queue/data", "session", ("stream",),
          "the session's event stream (outputs of its events)"),
    Route("call", POST, rf"{API}/call/(?:v2/)?{ID}/?", "session", ("event",), "start an event (REST API)"),
    Route("call-result", GET, rf"{API}/call/(?:v2/)?{ID}/(?P<event>{ID})", "session", ("stream",),
          "an event's result stream (REST API)"),
    Route("run", POST, rf"{API}/(?:run|api)/{ID}/?", "session", ("files",), "run an event and wait (REST API)"),
    Route("cancel", POST, rf"{API}/(?:cancel|reset/?)", "session", purpose="cancel an event of the session"),
    Route("heartbeat", GET, rf"{API}/heartbeat/(?P<session>{ID})", "session",
          purpose="keeps the session alive; closing it ends the session's events"),
    Route("deep-link", GET, rf"{API}/deep_link", "session", purpose="the session's component values"),
    Route("stream-in", POST, rf"{API}/stream/(?P<event>{ID})(?:/close)?", "session",
          purpose="streamed input of an event (not used by this app)"),
    Route("stream-out", GET, rf"{API}/stream/(?P<session>{ID})/{ID}/{ID}/{ID}", "session",
          purpose="streamed media output of a session (not used by this app)"),
    Route("upload-progress", GET, rf"{API}/upload_progress", "session", purpose="progress of one's own upload"),
    Route("upload", POST, rf"{API}/upload/?", "upload", ("files",), "Gradio's file upload"),
    Route("file", GET, rf"{API}/file(?:=|/)(?P<path>.+)", "file", purpose="a file Gradio gave this workspace"),
    Route("download", GET, r"/clipforget/download/(?P<name>[A-Za-z0-9_.\-]{1,200})", "download",
          purpose="an export or report of this workspace (attachment)"),
    Route("thumbnail", GET, r"/clipforget/thumb/(?P<name>[0-9a-f]{20}\.png)", "thumbnail",
          purpose="a retrieval result's thumbnail (shared galleries)"),
)


def find_route(method: str, path: str) -> tuple[Route, re.Match] | None:
    """The route that answers ``method path`` (path relative to the app's root), or ``None``: closed."""
    for route in ROUTES:
        match = route.match(method, path)
        if match is not None:
            return route, match
    return None
