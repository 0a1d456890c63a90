"""The control socket: a gevent StreamServer on a Unix socket, one greenlet per connection.

Framing is newline-delimited JSON (protocol.py). Slow, silent or hostile clients cannot block the
scheduler or each other: every connection has its own greenlet from a bounded Pool, an idle timeout,
and a 1 MiB cap on a request line (the rest of an over-long line is discarded and the connection stays
usable). The socket is bound under a temporary name, given its mode, then renamed into place, so a
client never sees a half-set-up socket.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket as stdsocket
import struct
from pathlib import Path
from typing import Any, Callable

import gevent
from gevent import socket
from gevent.pool import Pool
from gevent.server import StreamServer

from koku.core import logfmt
from koku.core.clock import Clock

from koku.core import protocol
from koku.errors import ProtocolError

IDLE_TIMEOUT = 60.0  # seconds a connection may sit without sending a complete request
MAX_CONNECTIONS = 1024


def bind_unix(path: Path, mode: int = 0o600, group: str | None = None) -> socket.socket:
    """Bind and listen on ``path`` (replacing what is there: the caller holds the pid lock)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp))
        if group:
            os.chown(tmp, -1, grp.getgrnam(group).gr_gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        sock.listen(128)
    except BaseException:
        sock.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return sock


def peer_allowed(conn: Any, group: str | None) -> bool:
    """When the daemon runs as root, only root and members of ``group`` may talk to it."""
    if os.geteuid() != 0:
        return True  # the socket's 0600 mode already limits it to our own user (and root)
    try:
        raw = conn.getsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return False
    _pid, uid, gid = struct.unpack("3i", raw)
    if uid == 0:
        return True
    if not group:
        return False
    try:
        g = grp.getgrnam(group)
    except KeyError:
        return False
    if gid == g.gr_gid:
        return True
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        return False
    return user in g.gr_mem


class ControlServer:
    def __init__(self, path: Path, handle: Callable[[protocol.Request], Any], group: str | None = None,
                 clock: Clock | None = None):
        self.path = path
        self._handle = handle
        self._group = group
        self._server: StreamServer | None = None
        self._pool: Pool | None = None
        if clock is None:
            from koku.daemon.clock import GeventClock

            clock = GeventClock()
        self._clock = clock

    def start(self) -> None:
        mode = 0o660 if self._group else 0o600
        listener = bind_unix(self.path, mode, self._group)
        self._pool = Pool(MAX_CONNECTIONS)
        self._server = StreamServer(listener, self._serve, spawn=self._pool)
        self._server.start()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting; give requests in flight ``timeout`` seconds (on the daemon's clock), then end them."""
        if self._server is not None and self._pool is not None:
            self._server.close()
            deadline = self._clock.monotonic() + timeout
            for handler in list(self._pool.greenlets):
                self._clock.wait(handler, max(0.0, deadline - self._clock.monotonic()))
            self._pool.kill(block=False)  # what is left ends now
            self._server = None
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def _serve(self, conn: socket.socket, _address: Any) -> None:
        conn.settimeout(IDLE_TIMEOUT)
        try:
            allowed = peer_allowed(conn, self._group)
            for line in _lines(conn):
                if not allowed:
                    # Answer the first request, then hang up: a client that writes before it reads (as
                    # muzan's does) gets a reason instead of a broken pipe.
                    conn.sendall(protocol.dumps(protocol.error("permission denied: not root or in socket_group")))
                    return
                if line is None:
                    reply = protocol.error(f"invalid request: line longer than {protocol.MAX_LINE} bytes")
                else:
                    reply = self._answer(line)
                conn.sendall(_encode(reply))
        except (OSError, socket.timeout):
            pass  # the client went away or went quiet; nothing to answer
        finally:
            conn.close()

    def _answer(self, line: bytes) -> Any:
        if not line.strip():
            return protocol.error("invalid request: empty line")
        try:
            request = protocol.parse_request(line)
        except ProtocolError as exc:
            return protocol.error(f"invalid request: {exc}")
        try:
            return self._handle(request)
        except gevent.GreenletExit:
            raise
        except Exception as exc:  # a bug in a handler must not take the daemon down
            logfmt.error("request failed", request=request.kind, reason=repr(exc))
            return protocol.error(f"internal error handling {request.kind}: {exc}")


def _encode(reply: Any) -> bytes:
    try:
        return protocol.dumps(reply)
    except (TypeError, ValueError) as exc:  # a handler bug; the client still gets an answer
        logfmt.error("cannot encode an answer", reason=repr(exc))
        return protocol.dumps(protocol.error(f"internal error: cannot encode the answer ({exc})"))


def _lines(conn: socket.socket):
    """Yield request lines; ``None`` for a line over MAX_LINE (whose rest is skipped)."""
    buf = b""
    discarding = False
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            return
        buf += chunk
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1:]
            if discarding:
                discarding = False
                continue
            yield line if len(line) <= protocol.MAX_LINE else None
        if len(buf) > protocol.MAX_LINE:
            if not discarding:
                discarding = True
                yield None
            buf = b""
