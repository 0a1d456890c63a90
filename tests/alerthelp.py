"""Loopback receivers for the alert tests: an HTTP(S) server recording webhooks and pings, and a
config builder. Real sockets on 127.0.0.1; nothing leaves the machine."""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import tomli_w

EVERY_SECOND = "* * * * * *"
NEVER = "0 0 0 1 1 *"  # once a year: jobs the test runs by hand


class Received:
    def __init__(self, method: str, path: str, headers: dict[str, str], body: bytes, at: float):
        self.method, self.path, self.headers, self.body, self.at = method, path, headers, body, at

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} {self.body[:80]!r}>"


class Hook:
    """An HTTP server on 127.0.0.1 in a thread. ``statuses`` answers the next requests in order (then
    200); ``hang`` makes it accept and never answer."""

    def __init__(self, ssl_context: Any = None):
        self.received: list[Received] = []
        self.statuses: deque[int] = deque()
        self.hang = False
        self._release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                hook.received.append(Received(self.command, self.path, dict(self.headers), body, time.monotonic()))
                if hook.hang:
                    hook._release.wait(60)
                    return
                status = hook.statuses.popleft() if hook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            do_POST = do_GET = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if ssl_context is not None:
            self.server.socket = ssl_context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="hook", daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook", scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def events(self, path: str = "/hook") -> list[dict[str, Any]]:
        return [r.json() for r in list(self.received) if r.path == path]

    def close(self) -> None:
        self._release.set()
        self.server.shutdown()
        self.server.server_close()


def alert_config(*jobs: dict[str, Any], notify: dict[str, Any], **top: Any) -> str:
    doc: dict[str, Any] = {"notify": notify, **top}
    doc.setdefault("daemon", {})
    doc["daemon"] = {"kill_grace": "1s", "shutdown_grace": "2s", **doc["daemon"]}
    doc["job"] = list(jobs)
    return tomli_w.dumps(doc)


def make_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 it signed (openssl CLI). Returns
    (ca.pem, server.pem, server.key)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr, ext = folder / "server.pem", folder / "server.key", folder / "server.csr", folder / "ext.cnf"
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=koku test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext.write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))
    return ca, cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
