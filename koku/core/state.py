"""Durable state: state.json, written atomically (temp file, fsync, rename, fsync of the directory).

A ``kill -9`` at any moment leaves either the old or the new file, never half of one. A file that
cannot be read as koku state is moved aside (``state.json.corrupt-<n>``) with a warning and the daemon
starts with empty state. Pure stdlib: no gevent here; the daemon decides when to call ``save``.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
from pathlib import Path
from typing import Any, Callable

from koku.core import safefs
from koku.core.model import JobMemory

FORMAT = 1


class StateStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        # The daemon sets this to its checked state dir (safefs): every name is then opened relative to
        # it, never through a symlink, and a FIFO planted as state.json cannot block the start.
        self.dir_fd: int | None = None
        # Each job's JSON, kept between saves: a save re-encodes only the jobs that changed, so a
        # daemon with many jobs and a long history does not serialize all of it on every run.
        self._fragments: dict[str, str] = {}
        self._tmp_seq = itertools.count(1)

    def load(self) -> tuple[dict[str, JobMemory], list[str]]:
        """Return (memory per job name, warnings). Never raises for a bad file: a file that is not koku
        state is moved aside; in a good file, each job's invalid fields are dropped with a warning that
        names the job and the field."""
        try:
            raw = self.path.read_bytes() if self.dir_fd is None else safefs.read_file(self.dir_fd, self.path.name)
        except FileNotFoundError:
            return {}, []
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.EINVAL):  # a symlink, a FIFO, a directory: not ours to read
                aside = self._move_aside()
                where = f"moved to {aside}" if aside else "could not be moved aside"
                return {}, [f"{self.path} {exc.strerror}; {where}; starting with empty state"]
            return {}, [f"cannot read {self.path}: {exc.strerror}; starting with empty state"]
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("jobs"), dict):
                raise ValueError("not a koku state file")
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            aside = self._move_aside()
            where = f"moved to {aside}" if aside else "could not be moved aside"
            return {}, [f"{self.path} is corrupt ({exc}); {where}; starting with empty state"]
        jobs, warnings = {}, []
        for name, entry in data["jobs"].items():
            if not isinstance(entry, dict):
                warnings.append(f'{self.path}: job "{name}": not an object; dropped')
                continue
            problems: list[str] = []
            jobs[str(name)] = JobMemory.from_dict(entry, problems)
            warnings += [f'{self.path}: job "{name}": {problem}' for problem in problems]
        return jobs, warnings

    def _move_aside(self) -> Path | None:
        for n in range(1, 1000):
            target = self.path.with_name(f"{self.path.name}.corrupt-{n}")
            d = self.dir_fd
            if not _lexists(target if d is None else target.name, d):
                try:
                    if d is None:
                        os.replace(self.path, target)
                    else:
                        os.replace(self.path.name, target.name, src_dir_fd=d, dst_dir_fd=d)
                    return target
                except OSError:
                    return None
        return None

    def save(self, jobs: dict[str, JobMemory], extra: dict[str, Any] | None = None,
             changed: set[str] | None = None) -> None:
        """Write the whole state atomically. ``changed`` names the jobs whose memory changed since the
        last save (None: all of them). Raises OSError (e.g. ENOSPC); the caller retries."""
        self.write(self.encode(jobs, extra, changed))

    def encode(self, jobs: dict[str, JobMemory], extra: dict[str, Any] | None = None,
               changed: set[str] | None = None) -> bytes:
        """The file's bytes. Must run where ``jobs`` cannot change meanwhile (the daemon's hub)."""
        return self.join(self.fragments(jobs, extra, changed))

    def fragments(self, jobs: dict[str, JobMemory], extra: dict[str, Any] | None = None,
                  changed: set[str] | None = None, pace: Callable[[], None] | None = None) -> tuple[str, ...]:
        """The file's pieces, for ``join``. Runs where ``jobs`` change (the daemon's hub); costs one
        encode per changed job, not one per job: 100,000 jobs must not mean 100,000 encodes for every
        run that starts. ``join`` may then run in a thread.

        ``pace`` is called between two jobs (the daemon lets its loop run there). A job that changes
        meanwhile is in the caller's next ``changed`` set; each job's piece is encoded in one go."""
        pace = pace or (lambda: None)
        encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        pieces = self._fragments
        if changed is None or len(pieces) != len(jobs) or not changed.issubset(pieces):
            # Jobs came or went (memory only grows, in order) or everything is dirty: a full pass.
            old, pieces = pieces, {}
            for name, mem in list(jobs.items()):
                piece = old.get(name)
                if piece is None or changed is None or name in changed:
                    pace()
                    piece = f"{encode(name)}:{encode(mem.to_dict())}"
                pieces[name] = piece
            self._fragments = pieces
        else:
            for name in changed:
                pace()
                mem = jobs.get(name)
                if mem is None:  # forgotten while the loop ran (a removed job's retention ended)
                    pieces.pop(name, None)
                    continue
                pieces[name] = f"{encode(name)}:{encode(mem.to_dict())}"
        head = encode({"format": FORMAT, **(extra or {})})
        return (f'{head[:-1]},"jobs":{{', *pieces.values(), "}}")

    @staticmethod
    def join(parts: tuple[str, ...]) -> bytes:
        head, *body, tail = parts
        return (head + ",".join(body) + tail).encode()

    def write(self, payload: bytes) -> None:
        """Replace the file with ``payload`` atomically. Blocking disk I/O: the daemon runs it in a
        thread so that an fsync never holds up a job that is due. Raises OSError."""
        # A name of its own per write: a write still finishing in a thread (its greenlet gone) must not
        # rename a file another write is filling. O_EXCL: never write through something planted there.
        d = self.dir_fd
        tmp: Path | str = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{next(self._tmp_seq)}")
        target: Path | str = self.path
        if d is not None:
            tmp, target = tmp.name, self.path.name  # type: ignore[union-attr]
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=d)
        try:
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp, d)
            raise
        os.close(fd)
        try:
            os.replace(tmp, target, src_dir_fd=d, dst_dir_fd=d)
        except BaseException:
            _unlink_quietly(tmp, d)
            raise
        if d is not None:
            try:
                os.fsync(d)
            except OSError:
                pass
        else:
            _fsync_dir(self.path.parent)


def _unlink_quietly(path: Path | str, dir_fd: int | None = None) -> None:
    try:
        os.unlink(path, dir_fd=dir_fd)
    except OSError:
        pass


def _lexists(path: Path | str, dir_fd: int | None) -> bool:
    try:
        os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
