"""The preview's web server: FastAPI routes over a :class:`~.session.PreviewSession`, served by uvicorn on
one address, with the page's static files from the package (no CDN).

Every request must carry the session's token (``?token=`` or the ``X-CorridorKey-Token`` header) and a
``Host`` header naming the address the server printed (DNS rebinding); otherwise 403. Requests name clips
by the ids the server gave them and frames by index: no request carries a path, and no route runs a
command. This is the only module that imports the web framework (``corridorkey preview`` imports it).
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
import socket
from importlib import resources
from typing import Any

from fastapi import Body, FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ..errors import CorridorKeyError
from .render import one_line
from .session import PreviewSession, UnknownClip

log = logging.getLogger(__name__)

TOKEN_HEADER = "x-corridorkey-token"
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/app.css": ("app.css", "text/css; charset=utf-8"),
}
"""The page's files: URL -> (file in the package's ``static/`` folder, content type). Nothing else is
served from disk."""
_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
}


def create_app(session: PreviewSession, token: str, hosts: set[str]) -> FastAPI:
    """The app: ``hosts`` are the ``Host`` header values accepted (``127.0.0.1:PORT``)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    expected = token.encode()

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if request.headers.get("host", "") not in hosts:
            return PlainTextResponse("403: the Host header does not name this server", 403, _HEADERS)
        given = request.query_params.get("token") or request.headers.get(TOKEN_HEADER) or ""
        if not secrets.compare_digest(given.encode(), expected):
            return PlainTextResponse("403: a valid token is required (use the URL the command printed)", 403)
        response = await call_next(request)
        response.headers.update(_HEADERS)
        return response

    @app.exception_handler(UnknownClip)
    async def unknown_clip(_: Request, exc: UnknownClip) -> Response:
        return PlainTextResponse(f"corridorkey: error: no clip {exc.args[0]!r} in this preview", 404)

    @app.exception_handler(CorridorKeyError)
    @app.exception_handler(ValueError)
    @app.exception_handler(OSError)
    async def failed(_: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"corridorkey: error: {one_line(exc)}", 400)

    def page_file(name: str, kind: str) -> Response:
        data = resources.files(__package__).joinpath("static", name).read_bytes()
        if name == "index.html":  # the page's own files are asked for with the token too
            for url in STATIC:
                if url != "/":
                    data = data.replace(f'"{url[1:]}"'.encode(), f'"{url[1:]}?token={token}"'.encode())
        return Response(data, media_type=kind)

    for url, (name, kind) in STATIC.items():
        app.add_api_route(url, lambda name=name, kind=kind: page_file(name, kind), methods=["GET"])

    @app.get("/api/state")
    def state() -> dict[str, Any]:
        return session.state()

    @app.get("/api/engine")
    def engine(clip: str) -> dict[str, str]:
        return {"engine": session.describe_engine(clip)}

    @app.get("/api/view")
    def view(clip: str, frame: int, view: str, bg: str = "checker") -> Response:
        return Response(session.view(clip, frame, view, bg), media_type="image/png")

    @app.get("/api/pixel")
    def pixel(clip: str, frame: int, x: int, y: int) -> dict[str, list[float]]:
        return session.pixel(clip, frame, x, y)

    @app.post("/api/settings")
    def settings(clip: str, data: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        entry = session.set_settings(clip, data)
        return {"settings": entry.settings.to_json(), "command": session.command(entry)}

    @app.post("/api/save")
    def save(clip: str) -> dict[str, str]:
        return {"saved": str(session.save(clip))}

    @app.post("/api/render")
    def render(clip: str) -> dict[str, Any]:
        session.render(clip)
        return session.renderer.status.to_json()

    @app.get("/api/render")
    def render_status() -> dict[str, Any]:
        return session.renderer.status.to_json()

    @app.post("/api/render/cancel")
    def cancel() -> dict[str, Any]:
        session.renderer.cancel()
        return session.renderer.status.to_json()

    @app.exception_handler(404)
    async def not_found(_: Request, __: Exception) -> Response:
        return JSONResponse({"detail": "not found"}, 404)

    return app


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address, or ``localhost``) is this machine's loopback."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one). Made with ``IPPROTO_TCP`` named, so that
    asyncio turns Nagle's algorithm off on each connection it accepts (it does so only for sockets that
    say TCP): otherwise a response's body waits ~40 ms behind its headers for the client's delayed ACK."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(64)
    sock.set_inheritable(True)
    return sock


class PreviewServer:
    """The app on its socket: :attr:`url` (with the token) once made; :meth:`run` serves until stopped
    (Ctrl-C, or :meth:`stop` from another thread), then stops a render between engine calls."""

    def __init__(self, session: PreviewSession, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self.session = session
        session.compress_views = not is_loopback(host)  # frames cross a network: compress them
        self.token = secrets.token_urlsafe(24)
        self.socket = bind(host, port)
        self.port = self.socket.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.address = f"{shown}:{self.port}"
        self.url = f"http://{self.address}/?token={self.token}"
        app = create_app(session, self.token, {self.address})
        config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
        self.server = uvicorn.Server(config)

    def run(self) -> None:
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.session.close()
            self.socket.close()

    def stop(self) -> None:
        self.server.should_exit = True
