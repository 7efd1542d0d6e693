"""HTTP-level protections around the Gradio app: workspace cookies, what ``/file=`` may serve, response headers.

:class:`SecurityMiddleware` is a plain ASGI middleware (it must not buffer Gradio's event streams), installed through
``demo.launch(app_kwargs={"middleware": [...]})`` (:func:`clipforget.app.ui.launch_kwargs`). On every HTTP request:

* **workspace cookie** -- a request without a valid browser token gets one (``Set-Cookie``, ``HttpOnly``,
  ``SameSite=Lax``, ``Secure`` behind HTTPS); a page load refreshes its lifetime. See :mod:`clipforget.app.identity`.
* **files** -- ``/gradio_api/file=<path>`` serves only files inside Gradio's own upload/cache folder (where Gradio
  copies every file an event returns, under a content hash); anything else -- the app's cache, uploads as the app
  stored them, remote URLs -- is refused with 404. File responses carry ``Content-Security-Policy: sandbox`` (a
  document opened from there has an opaque origin: no script, no access to the app's storage or cookies), and every
  type but raster images (PNG / JPEG / GIF / WebP) is sent as an attachment.
* **uploads** -- one request to Gradio's upload route may carry at most the upload limit (``--max-total-upload-mb``
  plus form overhead): a larger ``Content-Length`` is refused with 413 before Gradio reads it, a chunked body is cut
  off when it passes the limit.
* **headers** -- ``X-Content-Type-Options: nosniff`` everywhere; the page gets a Content-Security-Policy that Gradio's
  front end can live with (no framing by other sites, no plugins, no foreign ``<base>`` or form targets) and
  ``Referrer-Policy: same-origin``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from pathlib import Path

from .identity import COOKIE, WorkspaceTokens

FILE_ROUTE = re.compile(r"/gradio_api/file(?:=|/)(.*)$", re.DOTALL)
UPLOAD_ROUTE = re.compile(r"/(?:gradio_api/)?upload/?$")
INLINE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
PAGE_CSP = "frame-ancestors 'self'; object-src 'none'; base-uri 'self'; form-action 'self'"
FILE_CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; sandbox"
COMMON_HEADERS = (("x-content-type-options", "nosniff"), ("referrer-policy", "same-origin"))


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


def within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """``path`` resolves to ``folder`` or below it (symlinks followed)."""
    try:
        Path(os.path.abspath(path)).resolve().relative_to(Path(folder).resolve())
    except (ValueError, OSError):
        return False
    return True


class SecurityMiddleware:
    """See the module docstring. ``served_roots`` returns the folders ``/file=`` may serve from (Gradio's cache)."""

    def __init__(self, app, tokens: WorkspaceTokens, new_workspace: Callable[[], str],
                 served_roots: Callable[[], list[str]], cookie_max_age: int = 30 * 86400,
                 max_upload_request_bytes: int | None = None):
        self.app = app
        self.tokens = tokens
        self.new_workspace = new_workspace
        self.served_roots = served_roots
        self.cookie_max_age = int(cookie_max_age)
        self.max_upload_request_bytes = max_upload_request_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        match = FILE_ROUTE.search(path)
        if match and not any(within(match.group(1), root) for root in self.served_roots()):
            await self._refuse(send)
            return
        if self.max_upload_request_bytes and UPLOAD_ROUTE.search(path):
            declared = _header(scope, b"content-length")
            if declared.isdigit() and int(declared) > self.max_upload_request_bytes:
                await self._refuse(send, 413, "upload larger than the server accepts (--max-total-upload-mb)")
                return
            receive = self._counting(receive, self.max_upload_request_bytes)
        token = _cookies(scope).get(COOKIE)
        set_cookie = None
        if self.tokens.verify(token, "browser") is None:
            set_cookie = self.tokens.issue(self.new_workspace(), "browser")
        elif scope.get("method") == "GET" and path.endswith("/"):
            set_cookie = token  # a page load: keep the workspace alive for another cookie lifetime
        secure = scope.get("scheme") == "https" or _header(scope, b"x-forwarded-proto") == "https"

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for name, value in COMMON_HEADERS:
                    if name.encode() not in names:
                        headers.append((name.encode(), value.encode()))
                if match:
                    headers = self._file_headers(headers)
                elif b"content-security-policy" not in names:
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                    headers.append((b"x-frame-options", b"SAMEORIGIN"))
                if set_cookie:
                    cookie = (f"{COOKIE}={set_cookie}; Path=/; Max-Age={self.cookie_max_age}; HttpOnly; "
                              f"SameSite=Lax{'; Secure' if secure else ''}")
                    headers.append((b"set-cookie", cookie.encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

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
    def _counting(receive, limit: int):
        """``receive`` that ends the request as a client disconnect once its body passes ``limit`` bytes (a chunked
        upload has no Content-Length to check first); Gradio then deletes what it had written."""
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

    @staticmethod
    async def _refuse(send, status: int = 404, detail: str = "Not found") -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"x-content-type-options", b"nosniff")]})
        await send({"type": "http.response.body", "body": body})
