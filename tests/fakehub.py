"""A small Hugging Face Hub on 127.0.0.1, speaking what the real ``huggingface_hub`` client uses to download.

Two HTTP servers share one state: the *hub* answers ``HEAD``/``GET /{repo}/resolve/{revision}/{file}``
like huggingface.co (``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``, ``X-Linked-Size``, a 302 ``Location`` to
the CDN for LFS files, ``X-Error-Code`` EntryNotFound / RepoNotFound / RevisionNotFound / GatedRepo), and the
*cdn* (another port, so another origin: the client stops following redirects there, as with the real CDN)
serves the bytes, with ``Range`` support (``bytes=A-`` and ``bytes=A-B``). No xet headers are ever sent: the
client uses plain HTTP.

Faults a test can switch on: hostile headers (:attr:`FakeHub.hostile` replaces X-Repo-Commit, ETag,
X-Linked-Etag or Location in every file answer), a status for every hub request (503), a HEAD that hangs,
bytes whose sha256 does not match, a connection dropped mid-body (once), a gate that holds the body back, a
lying size, a slow body (``trickle``: N bytes every T seconds) and a body that stops (``stall_after``: N
bytes, then silence).
Every request is recorded, and so is every body byte the CDN served (:attr:`FakeHub.served`). Each handler
waits at most ``MAX_WAIT`` seconds; :meth:`FakeHub.close` (called
by the fixture) releases every waiting handler and stops both servers.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

MAX_WAIT = 20.0


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = field(default_factory=lambda: uuid.uuid4().hex + uuid.uuid4().hex[:8])
    branches: tuple[str, ...] = ("main",)
    lfs: bool = True  # LFS files: 302 to the CDN with X-Linked-Etag = sha256; else 200 with a git sha1 ETag
    token: str | None = None  # private: needs "Authorization: Bearer <token>"
    gated: bool = False


@dataclass(frozen=True)
class Seen:
    server: str  # "hub" or "cdn"
    method: str
    filename: str
    headers: dict[str, str]  # names in lower case

    @property
    def short(self) -> tuple[str, str, str]:
        return (self.server, self.method, self.filename)


class FakeHub:
    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Seen] = []
        self.status: int | None = None  # every hub request answers this (e.g. 503)
        self.plain_404 = False  # every hub request answers a bare 404 (a proxy, not the Hub)
        self.hang_head = False  # hub HEAD requests wait until close()
        self.corrupt: set[str] = set()  # cdn serves these with one byte flipped
        self.drop_once: dict[str, int] = {}  # cdn sends this many bytes, then drops the connection, once
        self.gate: threading.Event | None = None  # cdn bodies wait for it
        self.size_override: dict[str, int] = {}  # X-Linked-Size lies for these
        self.trickle: dict[str, tuple[int, float]] = {}  # cdn sends (bytes, every seconds) for these
        self.stall_after: dict[str, int] = {}  # cdn sends this many bytes, then nothing until close()
        self.served: dict[str, int] = {}  # body bytes the cdn sent, per file name
        self.hostile: dict[str, str] = {}  # headers that replace the hub's own in every file answer
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._blobs: dict[str, tuple[str, bytes]] = {}  # sha256 -> (filename, bytes)
        self.hub = self._serve("hub")
        self.cdn = self._serve("cdn")
        self.url = f"http://127.0.0.1:{self.hub.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self.cdn.server_address[1]}"

    # -- set-up ----------------------------------------------------------------------------------------

    def add_repo(self, repo_id: str, files: dict[str, bytes], **kwargs) -> Repo:
        repo = Repo(dict(files), **kwargs)
        self.repos[repo_id] = repo
        for name, data in files.items():
            self._blobs[hashlib.sha256(data).hexdigest()] = (name, data)
        return repo

    def seen(self, server: str | None = None) -> list[tuple[str, str, str]]:
        with self._lock:
            return [r.short for r in self.requests if server is None or r.server == server]

    def _record(self, seen: Seen) -> None:
        with self._lock:
            self.requests.append(seen)

    def _count(self, filename: str, sent: int) -> None:
        with self._lock:
            self.served[filename] = self.served.get(filename, 0) + sent

    # -- life cycle ------------------------------------------------------------------------------------

    def _serve(self, role: str) -> ThreadingHTTPServer:
        hub = self

        class Handler(_Handler):
            fake = hub
            server_role = role

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        server.thread = thread  # type: ignore[attr-defined]
        return server

    def wait(self, event: threading.Event | None = None) -> bool:
        """Block a handler until ``event`` is set or close(), at most MAX_WAIT s; True if ``event`` is set."""
        step = 0.05
        waited = 0.0
        while waited < MAX_WAIT and not self._stop.is_set():
            if event is not None and event.is_set():
                return True
            self._stop.wait(step)
            waited += step
        return False

    def close(self) -> None:
        self._stop.set()
        for server in (self.hub, self.cdn):
            server.shutdown()
            server.server_close()
            server.thread.join(timeout=5)  # type: ignore[attr-defined]

    def __enter__(self) -> FakeHub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    server_role: str
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers after close()
    timeout = MAX_WAIT  # a client that stops talking cannot hold a handler forever

    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def _dispatch(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        if self.server_role == "cdn":
            self._cdn(method, path)
        else:
            self._hub(method, path)

    def _reply(self, status: int, headers: dict[str, str], body: bytes = b"", send_body: bool = True) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", headers.get("Content-Length", str(len(body))))
        self.end_headers()
        if send_body and body:
            self.wfile.write(body)

    # -- the hub: /{owner}/{name}/resolve/{revision}/{filename} -----------------------------------------

    def _hub(self, method: str, path: str) -> None:
        fake = self.fake
        parts = path.lstrip("/").split("/", 4)
        if len(parts) < 5 or parts[2] != "resolve":
            self._reply(404, {}, b"not a resolve url")
            return
        repo_id, revision, filename = f"{parts[0]}/{parts[1]}", parts[3], parts[4]
        fake._record(Seen("hub", method, filename, {k.lower(): v for k, v in self.headers.items()}))
        if fake.hang_head and method == "HEAD":
            fake.wait()
            return  # the client has given up; close without an answer
        if fake.status is not None:
            self._reply(fake.status, {}, b"Service Unavailable")
            return
        if fake.plain_404:
            self._reply(404, {}, b"Not Found")
            return
        repo = fake.repos.get(repo_id)
        authorized = repo is not None and (
            repo.token is None or self.headers.get("Authorization") == f"Bearer {repo.token}"
        )
        if repo is None or (repo.token is not None and not authorized):
            self._error(401, "RepoNotFound", "Repository not found")
            return
        if repo.gated and self.headers.get("Authorization") is None:
            self._error(403, "GatedRepo", "Access to model is restricted")
            return
        if revision not in repo.branches and revision != repo.commit:
            self._error(404, "RevisionNotFound", "Invalid rev id")
            return
        commit = {"X-Repo-Commit": repo.commit}
        data = repo.files.get(filename)
        if data is None:
            self._error(404, "EntryNotFound", "Entry not found", commit)
            return
        size = str(fake.size_override.get(filename, len(data)))
        if repo.lfs:
            sha = hashlib.sha256(data).hexdigest()
            headers = {
                **commit,
                "ETag": f'"{git_blob_sha1(b"version https://git-lfs.github.com/spec/v1 " + sha.encode())}"',
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": size,
                "Location": f"{fake.cdn_url}/cdn/{sha}/{filename}?X-Amz-Signature=fake",
                "Content-Length": "0",
            }
            self._reply(302, {**headers, **fake.hostile})
        else:
            headers = {**commit, "ETag": f'"{git_blob_sha1(data)}"', "Content-Length": size}
            self._reply(200, {**headers, **fake.hostile}, data, send_body=method == "GET")

    def _error(self, status: int, code: str, message: str, extra: dict[str, str] | None = None) -> None:
        self._reply(
            status, {"X-Error-Code": code, "X-Error-Message": message, **(extra or {})}, message.encode()
        )

    # -- the cdn: /cdn/{sha256}/{filename} --------------------------------------------------------------

    def _cdn(self, method: str, path: str) -> None:
        fake = self.fake
        parts = path.lstrip("/").split("/", 2)
        blob = fake._blobs.get(parts[1]) if len(parts) == 3 and parts[0] == "cdn" else None
        fake._record(Seen("cdn", method, parts[-1], {k.lower(): v for k, v in self.headers.items()}))
        if blob is None:
            self._reply(404, {}, b"NoSuchKey")
            return
        filename, data = blob
        if filename in fake.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start, end = 0, len(data) - 1
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes="):
            first, _, last = ranged[len("bytes=") :].partition("-")
            start = int(first)
            end = min(int(last), end) if last else end
        if fake.gate is not None and method == "GET":
            fake.wait(fake.gate)
        body = data[start : end + 1]
        status = 206 if ranged else 200
        headers = {"ETag": f'"{hashlib.sha256(data).hexdigest()}"', "Accept-Ranges": "bytes"}
        if ranged:
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        if method == "HEAD":
            self._reply(status, {**headers, "Content-Length": str(len(body))}, send_body=False)
            return
        cut = fake.drop_once.pop(filename, None)
        if cut is not None:
            self._send_slowly(filename, status, headers, body, len(body[:cut]), 0.0, stop=True)
            return
        if filename in fake.stall_after:
            self._send_slowly(filename, status, headers, body, fake.stall_after[filename], 0.0, stop=False)
            return
        if filename in fake.trickle:
            step, every = fake.trickle[filename]
            self._send_slowly(filename, status, headers, body, step, every, stop=False)
            return
        fake._count(filename, len(body))  # before sending: a test may look as soon as the client has it
        self._reply(status, headers, body)

    def _send_slowly(
        self,
        filename: str,
        status: int,
        headers: dict[str, str],
        body: bytes,
        step: int,
        every: float,
        stop: bool,
    ) -> None:
        """Send ``step`` bytes, then (``stop``) drop the connection, or wait ``every`` s and go on; ``every``
        0 without ``stop``: send ``step`` bytes, then nothing until close() (a stalled body)."""
        fake = self.fake
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(key, value)
        self.end_headers()
        sent = 0
        try:
            while sent < len(body):
                chunk = body[sent : sent + step]
                fake._count(filename, len(chunk))
                self.wfile.write(chunk)
                self.wfile.flush()
                sent += len(chunk)
                if stop:
                    break
                if every <= 0:
                    fake.wait()  # stalled: the client must give up
                    break
                if fake._stop.wait(every):
                    break
        except OSError:  # the client gave up and closed the connection
            pass
        self.close_connection = True
