"""HTTP-level protections around the Gradio app: workspace cookies, a guard on every route, response headers.

:class:`SecurityMiddleware` is a plain ASGI middleware (it must not buffer Gradio's event streams), installed through
``demo.launch(app_kwargs={"middleware": [...]})`` (:func:`clipforget.app.ui.launch_kwargs`). On every HTTP request it
looks the route up (:mod:`clipforget.app.routes`; unlisted: 404), checks the ``Origin`` (foreign: 403, no CORS
header), sets the workspace cookie (:mod:`clipforget.app.identity`), checks that every Gradio handle the request names
belongs to the caller (:mod:`clipforget.app.bindings`) and binds those it hands out, limits upload sizes (413), serves
files sandboxed and as attachments unless they are raster images, and adds the security headers. docs/security.md
says what each of these stops and which test checks it.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from .bindings import Bindings
from .identity import COOKIE, HEADER, WorkspaceTokens
from .routes import Route, find_route

log = logging.getLogger("clipforget.app.security")

INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
PAGE_CSP = "frame-ancestors 'self'; object-src 'none'; base-uri 'self'; form-action 'self'"
FILE_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"
COMMON_HEADERS = (("x-content-type-options", "nosniff"), ("referrer-policy", "same-origin"))
MAX_EVENT_BODY = 2_000_000  # a JSON event request: texts and file references, never file contents
MAX_CAPTURED_RESPONSE = 20_000_000  # JSON responses read for the handles they hand out
THUMBNAIL_LINK = re.compile(r"https?:/{1,2}[^/]+(?:/[^?#]*)?/clipforget/thumb/(?P<name>[0-9a-f]{20}\.png)")
FOREIGN_ORIGIN = "cross-origin request refused: this page's origin may not call the app (--allow-origin)"
CORS_METHODS = "GET, HEAD, POST"
MAX_HANDLES_PER_REQUEST = 8  # session hashes / upload ids one request may name (the page names one)
NO_WORKSPACE = "no workspace: reload the page (cookies must be enabled) or send a valid X-Clipforget-Token"


def _cookies(scope) -> dict[str, str]:
    raw = "; ".join(v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"cookie")
    jar = SimpleCookie()
    try:
        jar.load(raw)
    except CookieError:
        return {}
    return {k: m.value for k, m in jar.items()}


def _header(scope, name: bytes) -> str:
    return next((v.decode("latin-1") for k, v in scope.get("headers", []) if k == name), "")


def _https(scope) -> bool:
    """The request came over HTTPS (directly, or through a proxy that says so)."""
    return scope.get("scheme") == "https" or _header(scope, b"x-forwarded-proto") == "https"


def normalise_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` in one spelling (lower case, no default port), or ``None`` when malformed."""
    try:
        parts = urlsplit(origin.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}" + ("" if port in (None, default) else f":{port}")


def _host_netloc(host: str, scheme: str) -> str:
    host = host.strip().lower()
    default = ":443" if scheme == "https" else ":80"
    return host[: -len(default)] if host.endswith(default) else host


def within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """``path`` resolves to ``folder`` or below it (symlinks followed)."""
    try:
        Path(os.path.abspath(path)).resolve().relative_to(Path(folder).resolve())
    except (ValueError, OSError):
        return False
    return True


def file_key(path: str) -> str:
    """One spelling of a served file's path (the key files are bound under)."""
    return os.path.normpath(os.path.abspath(path))


def file_paths(value) -> Iterator[str]:
    """Paths of the files a Gradio payload carries (``FileData`` dicts, nested in lists and dicts)."""
    if isinstance(value, dict):
        path = value.get("path")
        if isinstance(path, str) and path:
            yield path
        for item in value.values():
            if isinstance(item, dict | list):
                yield from file_paths(item)
    elif isinstance(value, list):
        for item in value:
            yield from file_paths(item)


class SecurityMiddleware:
    """See the module docstring. ``served_roots`` returns the folders ``/file=`` may serve from (Gradio's cache);
    ``download(owner, name)`` the export file ``name`` of workspace ``owner``, or ``None``; ``thumbnail(name)`` the
    thumbnail file ``name``, or ``None``."""

    def __init__(self, app, tokens: WorkspaceTokens, new_workspace: Callable[[], str],
                 served_roots: Callable[[], list[str]], bindings: Bindings | None = None,
                 download: Callable[[str, str], Path | None] | None = None,
                 thumbnail: Callable[[str], Path | None] | None = None, cookie_max_age: int = 30 * 86400,
                 max_upload_request_bytes: int | None = None, allowed_origins: list[str] | tuple[str, ...] = ()):
        self.app = app
        self.tokens = tokens
        self.new_workspace = new_workspace
        self.served_roots = served_roots
        self.bindings = bindings if bindings is not None else Bindings()
        self.download = download
        self.thumbnail = thumbnail
        self.cookie_max_age = int(cookie_max_age)
        self.max_upload_request_bytes = max_upload_request_bytes
        self.allowed_origins = {o for o in (normalise_origin(x) for x in allowed_origins) if o}

    def origin_allowed(self, origin: str, scope) -> bool:
        """``origin`` is the app's own (the host the request was sent to) or one of ``allowed_origins``."""
        normal = normalise_origin(origin)
        if normal is None:
            return False  # "null" (file:// pages, sandboxed frames) and anything malformed
        if normal in self.allowed_origins:
            return True
        scheme, netloc = normal.split("://", 1)
        hosts = [_header(scope, b"host"), _header(scope, b"x-forwarded-host").split(",")[0]]
        served = "https" if _https(scope) else "http"
        return scheme == served and any(h and _host_netloc(h, scheme) == netloc for h in hosts)

    # the request ---------------------------------------------------------------------------------------------------
    @staticmethod
    async def _preflight(scope, send, origin: str | None) -> None:
        """Answer a CORS preflight: 204 with the allowed methods for ``origin``, 403 without any CORS header when
        the origin is foreign (``None``)."""
        if origin is None:
            await SecurityMiddleware._refuse(send, 403, FOREIGN_ORIGIN)
            return
        asked = _header(scope, b"access-control-request-headers")
        headers = [(b"access-control-allow-origin", origin.encode("latin-1")),
                   (b"access-control-allow-credentials", b"true"),
                   (b"access-control-allow-methods", CORS_METHODS.encode()),
                   (b"access-control-max-age", b"600"), (b"vary", b"Origin"), (b"content-length", b"0"),
                   (b"x-content-type-options", b"nosniff")]
        if asked:
            headers.append((b"access-control-allow-headers", asked.encode("latin-1")[:1000]))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "") or ""
        if root and path.startswith(root):
            path = path[len(root):] or "/"
        method = scope.get("method", "GET")
        origin = _header(scope, b"origin")
        origin_ok = not origin or self.origin_allowed(origin, scope)
        if method == "OPTIONS":  # a CORS preflight: only an allowed origin gets one
            await self._preflight(scope, send, origin if origin and origin_ok else None)
            return
        found = find_route(method, path)
        if found is None:
            log.info("closed route: %s %s", method, path[:200])
            await self._refuse(send)
            return
        route, match = found
        if not origin_ok and (method not in ("GET", "HEAD") or route.guard not in ("public", "page")):
            log.info("foreign origin refused: %s %s %s", origin[:100], method, path[:200])
            await self._refuse(send, 403, FOREIGN_ORIGIN)
            return
        cors = origin if origin and origin_ok and normalise_origin(origin) in self.allowed_origins else None
        cookie = _cookies(scope).get(COOKIE)
        header = _header(scope, HEADER.encode())
        owner = self.tokens.resolve(header, cookie)
        set_cookie = None
        if not header and owner is None:  # a browser without a valid cookie gets a workspace of its own
            set_cookie = self.tokens.issue(self.new_workspace(), "browser")
        elif route.guard == "page" and method == "GET" and owner is not None:
            set_cookie = cookie  # a page load: keep the workspace alive for another cookie lifetime
        secure = _https(scope)
        is_file = route.guard in ("file", "download", "thumbnail")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                # CORS is decided here alone: whatever a layer below said about it is dropped
                headers = [(k, v) for k, v in message.get("headers", [])
                           if not k.lower().startswith(b"access-control-")]
                if cors:
                    headers += [(b"access-control-allow-origin", cors.encode("latin-1")),
                                (b"access-control-allow-credentials", b"true"), (b"vary", b"Origin")]
                names = {k.lower() for k, _ in headers}
                for name, value in COMMON_HEADERS:
                    if name.encode() not in names:
                        headers.append((name.encode(), value.encode()))
                if is_file and message.get("status", 200) < 400:  # a refusal stays a JSON answer
                    headers = self._file_headers(headers)
                elif b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                    headers.append((b"x-frame-options", b"SAMEORIGIN"))
                if set_cookie:
                    value = (f"{COOKIE}={set_cookie}; Path=/; Max-Age={self.cookie_max_age}; HttpOnly; "
                             f"SameSite=Lax{'; Secure' if secure else ''}")
                    headers.append((b"set-cookie", value.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        if route.guard in ("public", "page"):
            await self.app(scope, receive, send_with_headers)
            return
        if route.guard == "upload":  # the size first: an oversized request is refused before anything is read
            receive = self._upload_receive(scope, receive)
            if receive is None:
                await self._refuse(send_with_headers, 413, "upload larger than the server accepts "
                                                           "(--max-total-upload-mb)")
                return
        if owner is None:
            await self._refuse(send_with_headers, 403, NO_WORKSPACE)
            return
        # gradio_client fetches every output file as file=<its path>; a thumbnail's path is its link
        linked = THUMBNAIL_LINK.fullmatch(match.group("path")) if route.guard == "file" else None
        if route.guard == "thumbnail" or linked:
            name = (linked or match).group("name")
            await self._serve_file(self.thumbnail(name) if self.thumbnail else None, method, send_with_headers,
                                   b"image/png", [(b"cache-control", b"private, max-age=86400")])
            return
        if route.guard == "file":
            target = match.group("path")
            if not (any(within(target, r) for r in self.served_roots())
                    and self.bindings.allowed("file", file_key(target), owner)):
                await self._refuse(send_with_headers)
                return
            await self.app(scope, receive, send_with_headers)
            return
        if route.guard == "download":
            name = match.group("name")
            target = self.download(owner, name) if self.download else None
            # a report (HTML) is a download too, never a page of the app's origin: no type a browser renders
            kind = b"application/zip" if name.endswith(".zip") else b"application/octet-stream"
            await self._serve_file(target, method, send_with_headers, kind, [
                (b"content-disposition", f"attachment; filename*=UTF-8''{quote(name)}".encode("latin-1")),
                (b"cache-control", b"no-store"), (b"content-security-policy", FILE_CSP.encode())])
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        body = None
        if route.guard == "session" and method == "POST":
            raw = await self._read_body(receive)
            if raw is None:
                await self._refuse(send_with_headers, 413, "request too large")
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                await self._refuse(send_with_headers, 400, "the request body is not JSON")
                return
            receive = self._replay(raw, receive)
        if not self._handles_ok(route, match, query, body, owner):
            await self._refuse(send_with_headers)
            return
        if "stream" not in route.binds:
            await self.app(scope, receive, self._binding_send(route, owner, send_with_headers))
            return
        started = False

        async def stream_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send_with_headers(message)

        try:
            await self.app(scope, receive, self._binding_send(route, owner, stream_send))
        except Exception as err:  # Gradio ends a stream it has nothing for (a session without events) by raising
            log.info("event stream ended: %s %s", type(err).__name__, path[:200])
            if started:
                await send_with_headers({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                await self._refuse(send_with_headers)

    def _handles_ok(self, route: Route, match: re.Match, query: dict, body, owner: str) -> bool:
        """Every handle the request names belongs to ``owner`` (sessions and uploads are claimed on first use)."""
        groups = match.groupdict()
        sessions = [v for v in (groups.get("session"), *query.get("session_hash", [])) if v]
        events = [v for v in (groups.get("event"),) if v]
        uploads = list(query.get("upload_id", []))
        files: list[str] = []
        if isinstance(body, dict):
            if isinstance(body.get("session_hash"), str):
                sessions.append(body["session_hash"])
            if isinstance(body.get("event_id"), str):
                events.append(body["event_id"])
            files = list(file_paths(body.get("data")))
        elif body is not None:
            return False
        if len(sessions) + len(uploads) > MAX_HANDLES_PER_REQUEST:  # no request claims handles in bulk
            return False
        return (all(self.bindings.claim("session", s, owner) for s in sessions)
                and all(self.bindings.allowed("event", e, owner) for e in events)
                and all(self.bindings.claim("upload", u, owner) for u in uploads)
                and all(self.bindings.allowed("file", file_key(f), owner) for f in files))

    # responses: bind what they hand out ----------------------------------------------------------------------------
    def _binding_send(self, route: Route, owner: str, send):
        if not route.binds:
            return send
        bindings = self.bindings
        captured = bytearray()
        pending = bytearray()
        state = {"capture": False}

        def grant_from(raw: bytes) -> None:
            try:
                payload = json.loads(raw)
            except ValueError:
                return
            if "event" in route.binds and isinstance(payload, dict) and isinstance(payload.get("event_id"), str):
                bindings.grant("event", [payload["event_id"]], owner)
            if "files" in route.binds:
                paths = [p for p in payload if isinstance(p, str)] if isinstance(payload, list) else []
                bindings.grant("file", [file_key(p) for p in [*paths, *file_paths(payload)]], owner)
            if "stream" in route.binds:
                bindings.grant("file", [file_key(p) for p in file_paths(payload)], owner)

        async def wrapped(message):
            if message["type"] == "http.response.start":
                headers = {k.lower(): v for k, v in message.get("headers", [])}
                state["capture"] = (b"content-encoding" not in headers and "stream" not in route.binds
                                    and message.get("status", 200) == 200)
                await send(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            chunk = message.get("body", b"")
            if "stream" in route.binds:
                pending.extend(chunk)
                *lines, rest = bytes(pending).split(b"\n")
                pending[:] = rest
                for line in lines:
                    if line.startswith(b"data:"):
                        grant_from(line[5:])
                await send(message)
                return
            if state["capture"]:
                captured.extend(chunk)
                if len(captured) > MAX_CAPTURED_RESPONSE:
                    state["capture"] = False
                    captured.clear()
                elif not message.get("more_body", False):
                    grant_from(bytes(captured))
            await send(message)

        return wrapped

    # bodies --------------------------------------------------------------------------------------------------------
    @staticmethod
    async def _read_body(receive, limit: int = MAX_EVENT_BODY) -> bytes | None:
        raw = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            raw.extend(message.get("body", b""))
            if len(raw) > limit:
                return None
            if not message.get("more_body", False):
                break
        return bytes(raw)

    @staticmethod
    def _replay(raw: bytes, receive):
        sent = False

        async def replayed():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        return replayed

    def _upload_receive(self, scope, receive):
        """``receive`` of an upload within the request limit, or ``None`` when its Content-Length is over it. The
        request ends as a client disconnect once its body passes the limit (a chunked upload has no Content-Length to
        check first); Gradio then deletes what it had written."""
        limit = self.max_upload_request_bytes
        if not limit:
            return receive
        declared = _header(scope, b"content-length")
        if declared.isdigit() and int(declared) > limit:
            return None
        seen = 0

        async def wrapped():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    return {"type": "http.disconnect"}
            return message

        return wrapped

    # files ---------------------------------------------------------------------------------------------------------
    async def _serve_file(self, target: Path | None, method: str, send, content_type: bytes,
                          headers: list[tuple[bytes, bytes]]) -> None:
        """Send the app's own file ``target`` (an export, a thumbnail), or 404 when there is none."""
        if target is None or not target.is_file():
            await self._refuse(send)
            return
        size = target.stat().st_size
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", content_type), (b"content-length", str(size).encode()), *headers]})
        if method == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        with open(target, "rb") as handle:
            while True:
                chunk = handle.read(1 << 20)
                more = len(chunk) == 1 << 20
                await send({"type": "http.response.body", "body": chunk, "more_body": more})
                if not more:
                    break

    @staticmethod
    def _file_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        ctype = next((v.decode("latin-1") for k, v in headers if k.lower() == b"content-type"), "")
        inline = ctype.split(";")[0].strip().lower() in INLINE_TYPES
        out = [(k, v) for k, v in headers if k.lower() not in (b"content-security-policy", b"content-disposition")
               or (k.lower() == b"content-disposition" and inline)]
        out.append((b"content-security-policy", FILE_CSP.encode()))
        if not inline:
            old = next((v.decode("latin-1") for k, v in headers if k.lower() == b"content-disposition"), "")
            name = re.search(r"filename\*?=[^;]+", old)
            out.append((b"content-disposition", ("attachment" + (f"; {name.group(0)}" if name else "")).encode()))
            out = [(k, b"application/octet-stream") if k.lower() == b"content-type" else (k, v) for k, v in out]
        return out

    @staticmethod
    async def _refuse(send, status: int = 404, detail: str = "Not found") -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"x-content-type-options", b"nosniff")]})
        await send({"type": "http.response.body", "body": body})
