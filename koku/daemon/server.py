"""The control socket: a gevent StreamServer on a Unix socket, one greenlet per connection.

Framing is newline-delimited JSON (protocol.py). Slow, silent or hostile clients cannot block the
scheduler, each other, or the daemon's own use of file descriptors:
- a request line must arrive whole within LINE_DEADLINE seconds of its first byte (a client dribbling
  a byte a second is cut off, however steadily it sends) and a connection idle for IDLE_TIMEOUT is closed;
- at most ``max_connections`` are served (well below the fd limit: FD_RESERVE descriptors stay free
  for runs, job logs and state saves); when all are taken, a new client takes the slot of the
  connection that has waited longest for a request, so a flood cannot lock out a new ``Ping``;
- a peer uid other than root and the daemon's own holds at most PER_UID connections;
- a request line over 1 MiB is refused (its rest discarded) and the connection stays usable.
The socket is bound under a temporary name, given its mode, then renamed into place, so a client never
sees a half-set-up socket.
"""

from __future__ import annotations

import grp
import os
import resource
from pathlib import Path
from collections.abc import Iterator
from typing import Any, Callable

import gevent
from gevent import socket
from gevent.pool import Pool
from gevent.server import StreamServer

from koku.core import logfmt
from koku.core import protocol, safefs
from koku.core.clock import Clock
from koku.daemon.peers import Peer, peer_allowed, peer_of
from koku.errors import ProtocolError

IDLE_TIMEOUT = 60.0  # seconds a connection may wait before starting its next request
LINE_DEADLINE = 20.0  # seconds from a request's first byte to its newline
MAX_CONNECTIONS = 1024  # served at once, at most (fewer when the fd limit is low)
FD_RESERVE = 256  # descriptors never used by connections: runs (pipes, logs), state saves, the pid file
PER_UID = 32  # connections at once from one uid other than root and the daemon's own
BACKLOG = 1024  # connections the kernel queues before accept(): a burst of clients must not get EAGAIN
EVICT_AFTER = 1.0  # seconds a connection must have waited before a new client may take its slot


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force.

    systemd and most shells start services with a soft limit of 1,024; the hard limit is there to be
    used. Jobs inherit the raised limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)  # the kernel refuses "unlimited" here (fs.nr_open)
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def connection_limit(soft_fds: int) -> int:
    """How many connections fit beside FD_RESERVE descriptors (at least 8, at most MAX_CONNECTIONS)."""
    return max(8, min(MAX_CONNECTIONS, soft_fds - FD_RESERVE - EVICT_HEADROOM))


EVICT_HEADROOM = 16  # greenlets beyond the limit, each only long enough to take or be refused a slot


def bind_unix(path: Path, mode: int = 0o600, group: str | None = None) -> tuple[socket.socket, tuple[int, int]]:
    """Bind and listen on ``path`` (replacing what is there: the caller holds the singleton lock).
    Returns the listener and the (st_dev, st_ino) of the socket file, by which the daemon later tells
    its own socket from one that replaced it."""
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
        st = os.stat(tmp, follow_symlinks=False)
        os.replace(tmp, path)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return sock, (st.st_dev, st.st_ino)


class _Conn:
    __slots__ = ("uid", "limited", "waiting_since", "greenlet")

    def __init__(self, uid: int, limited: bool, since: float, greenlet: Any):
        self.uid = uid
        self.limited = limited
        self.waiting_since: float | None = since  # None while a request is being answered
        self.greenlet = greenlet


class ControlServer:
    def __init__(self, path: Path, handle: Callable[[protocol.Request], Any], group: str | None = None,
                 clock: Clock | None = None, gid: int | None = None, max_connections: int = MAX_CONNECTIONS):
        self.path = path
        self._handle = handle
        self._group = group
        self._gid = gid if gid is not None or not group else grp.getgrnam(group).gr_gid
        self.max_connections = max_connections
        self._conns: dict[Any, _Conn] = {}
        self._per_uid: dict[int, int] = {}
        self._server: StreamServer | None = None
        self._pool: Pool | None = None
        self._inode: tuple[int, int] | None = None  # of the socket file we bound
        if clock is None:
            from koku.daemon.clock import GeventClock

            clock = GeventClock()
        self._clock = clock

    def start(self) -> None:
        mode = 0o660 if self._group else 0o600
        listener, self._inode = bind_unix(self.path, mode, self._group)
        if self._pool is None:
            self._pool = Pool(self.max_connections + EVICT_HEADROOM)
        self._server = StreamServer(listener, self._serve, spawn=self._pool)
        self._server.start()

    def socket_ours(self) -> bool | None:
        """True if the path still holds the socket we bound, False if something else, None if gone."""
        return safefs.still_ours(self.path, self._inode)

    def rebind(self) -> None:
        """The socket file was deleted: bind a new one. Connections in flight carry on (same pool); the
        old listener, unreachable now, is closed. Raises OSError."""
        old = self._server
        self.start()
        if old is not None:
            old.close()

    def stop(self, timeout: float = 2.0) -> None:
        """Stop accepting; give requests in flight ``timeout`` seconds (on the daemon's clock), then end them."""
        if self._server is not None and self._pool is not None:
            self._server.close()
            deadline = self._clock.monotonic() + timeout
            for handler in list(self._pool.greenlets):
                self._clock.wait(handler, max(0.0, deadline - self._clock.monotonic()))
            self._pool.kill(block=False)  # what is left ends now
            self._server = None
        if self.socket_ours():  # never a socket that is not ours (another daemon's, after ours was deleted)
            try:
                os.unlink(self.path)
            except OSError:
                pass

    def _serve(self, conn: socket.socket, _address: Any) -> None:
        me = gevent.getcurrent()
        peer = peer_of(conn)
        slot: _Conn | None = None
        try:
            refusal = self._take_slot(me, peer)
            if refusal:
                conn.sendall(protocol.dumps(protocol.error(refusal)))
                return
            slot = self._conns[me]
            allowed = peer_allowed(conn, peer, self._gid)
            for line in _lines(conn, self._clock):
                slot.waiting_since = None
                if not allowed:
                    # Answer the first request, then hang up: a client that writes before it reads (as
                    # muzan's does) gets a reason instead of a broken pipe.
                    conn.sendall(protocol.dumps(protocol.error("permission denied: not root or in socket_group")))
                    return
                if line is None:
                    reply = protocol.error(f"invalid request: line longer than {protocol.MAX_LINE} bytes")
                elif line is _LATE:
                    conn.sendall(protocol.dumps(protocol.error(
                        f"invalid request: line not complete within {LINE_DEADLINE:g}s; closing")))
                    return
                else:
                    reply = self._answer(line)
                if isinstance(reply, Iterator):  # a streamed answer (RunFollow): several messages
                    self._stream(conn, reply)
                else:
                    conn.sendall(_encode(reply))
                slot.waiting_since = self._clock.monotonic()
        except (OSError, socket.timeout):
            pass  # the client went away or went quiet; nothing to answer
        finally:
            if slot is not None:
                self._release(me, slot)
            conn.close()

    def _take_slot(self, me: Any, peer: Peer | None) -> str | None:
        """Register this connection; a reason to refuse it instead, or None."""
        uid = peer.uid if peer is not None else -1
        limited = uid not in (0, os.geteuid())
        if limited and self._per_uid.get(uid, 0) >= PER_UID:
            return f"too many connections from uid {uid} (at most {PER_UID}); close some and retry"
        if len(self._conns) >= self.max_connections and not self._evict_one():
            return f"too many connections (at most {self.max_connections}); retry later"
        self._conns[me] = _Conn(uid, limited, self._clock.monotonic(), me)
        self._per_uid[uid] = self._per_uid.get(uid, 0) + 1
        return None

    def _evict_one(self) -> bool:
        """Close the connection that has waited longest for a request (not one being answered)."""
        cutoff = self._clock.monotonic() - EVICT_AFTER
        waiting = [c for c in self._conns.values() if c.waiting_since is not None and c.waiting_since <= cutoff]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: c.waiting_since)  # type: ignore[arg-type,return-value]
        self._release(victim.greenlet, victim)
        victim.greenlet.kill(block=False)
        return True

    def _release(self, key: Any, slot: _Conn) -> None:
        if self._conns.get(key) is slot:
            del self._conns[key]
            left = self._per_uid.get(slot.uid, 1) - 1
            if left > 0:
                self._per_uid[slot.uid] = left
            else:
                self._per_uid.pop(slot.uid, None)

    def _stream(self, conn: socket.socket, messages: Iterator[Any]) -> None:
        try:
            for message in messages:
                conn.sendall(_encode(message))
        except (OSError, socket.timeout, gevent.GreenletExit):
            raise
        except Exception as exc:  # a bug while streaming: end the answer with an error, keep the daemon
            logfmt.error("streamed answer failed", reason=repr(exc))
            conn.sendall(_encode(protocol.error(f"internal error: {exc}")))
        finally:
            close = getattr(messages, "close", None)
            if close is not None:
                close()

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
    if isinstance(reply, bytes):
        return reply  # already a whole message (the Status answer is assembled from cached pieces)
    try:
        return protocol.dumps(reply)
    except (TypeError, ValueError) as exc:  # a handler bug; the client still gets an answer
        logfmt.error("cannot encode an answer", reason=repr(exc))
        return protocol.dumps(protocol.error(f"internal error: cannot encode the answer ({exc})"))


_LATE = b"<late>"  # a sentinel line: the request did not arrive whole within LINE_DEADLINE


def _lines(conn: socket.socket, clock: Clock):
    """Yield request lines; ``None`` for a line over MAX_LINE (whose rest is skipped), ``_LATE`` when a
    line's deadline passes. Raises socket.timeout when the connection stays idle for IDLE_TIMEOUT."""
    buf = b""
    discarding = False
    deadline = clock.monotonic() + IDLE_TIMEOUT
    while True:
        remaining = deadline - clock.monotonic()
        if remaining <= 0:
            if buf or discarding:
                yield _LATE
            return
        conn.settimeout(remaining)
        try:
            chunk = conn.recv(65536)
        except socket.timeout:
            if buf or discarding:
                yield _LATE
            return
        if not chunk:
            return
        if not buf and not discarding:
            deadline = clock.monotonic() + LINE_DEADLINE  # the first byte of a request starts its clock
        buf += chunk
        answered = False
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                break
            line, buf = buf[:nl], buf[nl + 1:]
            if discarding:
                discarding = False
                continue
            yield line if len(line) <= protocol.MAX_LINE else None
            answered = True
        if len(buf) > protocol.MAX_LINE:
            if not discarding:
                discarding = True
                yield None
            buf = b""
        # Answering may have taken long (Wait): what is left in buf began arriving only with this chunk.
        if not buf and not discarding:
            deadline = clock.monotonic() + IDLE_TIMEOUT
        elif answered:
            deadline = clock.monotonic() + LINE_DEADLINE
