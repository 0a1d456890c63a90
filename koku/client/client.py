"""Blocking stdlib-socket client for the control socket. Never imports gevent."""

from __future__ import annotations

import errno
import json
import socket
from pathlib import Path
from typing import Any

from koku.core import protocol
from koku.errors import DaemonError, NotRunningError, ProtocolError


class Client:
    """One connection; requests go one after another on it, as muzan's client does."""

    def __init__(self, path: Path, timeout: float | None = 10.0):
        self.path = Path(path)
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._buf = b""

    def connect(self) -> Client:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK):
                raise NotRunningError(
                    f"the koku daemon is not running (no answer on {self.path}); start it with \"ku daemon start\""
                ) from None
            if exc.errno == errno.EACCES:
                raise NotRunningError(f"permission denied connecting to {self.path}") from None
            raise NotRunningError(f"cannot connect to {self.path}: {exc.strerror}") from None
        self._sock = sock
        return self

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Client:
        return self.connect() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, request: Any, timeout: float | None | str = "default") -> tuple[str, Any]:
        """Send one request (its wire form) and return (tag, body) of the answer.

        ``timeout=None`` waits forever (``ku run --wait``). Raises NotRunningError when the daemon goes
        away, ProtocolError for an answer that is not a message.
        """
        if self._sock is None:
            self.connect()
        assert self._sock is not None
        if timeout != "default":
            self._sock.settimeout(timeout)  # type: ignore[arg-type]
        try:
            self._sock.sendall(protocol.dumps(request))
            line = self._readline()
        except socket.timeout:
            raise DaemonError(f"the daemon did not answer within {self.timeout}s ({self.path})") from None
        except OSError as exc:
            raise NotRunningError(f"lost the connection to the daemon on {self.path}: {exc.strerror}") from None
        return self._decode(line)

    def _decode(self, line: bytes) -> tuple[str, Any]:
        try:
            return protocol.unpack_response(json.loads(line))
        except ValueError:
            raise ProtocolError(f"the daemon sent something that is not JSON: {line[:200]!r}") from None

    def receive(self) -> tuple[str, Any]:
        """The next message of a streamed answer (after ``call`` returned its first one); waits forever."""
        assert self._sock is not None
        self._sock.settimeout(None)
        try:
            line = self._readline()
        except OSError as exc:
            raise NotRunningError(f"lost the connection to the daemon on {self.path}: {exc.strerror}") from None
        return self._decode(line)

    def _readline(self) -> bytes:
        assert self._sock is not None
        if b"\n" not in self._buf:
            # Collect chunks and look for the newline only in each new one: a 4 MB status answer
            # must not be copied and rescanned once per chunk.
            chunks = [self._buf]
            while True:
                chunk = self._sock.recv(1 << 20)
                if not chunk:
                    raise NotRunningError(f"the daemon closed the connection on {self.path}")
                chunks.append(chunk)
                if b"\n" in chunk:
                    break
            self._buf = b"".join(chunks)
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def expect(self, request: Any, tag: str, timeout: float | None | str = "default") -> Any:
        """Call and return the body of an answer tagged ``tag``; an Error answer raises DaemonError."""
        got, body = self.call(request, timeout)
        if got == "Error":
            raise DaemonError(str(body))
        if got != tag:
            raise ProtocolError(f"expected a {tag} answer from the daemon, got {got}")
        return body
