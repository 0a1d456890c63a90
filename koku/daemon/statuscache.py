"""The Status answer, built from each job's fragment of compact JSON, encoded once per change.

At 10,000 jobs a Status answer is about 4 MB: building every job's dict and encoding it on the hub held
the loop for 126 ms (450 ms on a loaded machine) on every request. Each job's fragment is kept until the
daemon hears that the job changed (``discard``, from the runners' ``changed`` callback) or the clock was
stepped (``clear``); an answer is then mostly a join of cached bytes. Whatever must still be encoded
(the first answer after start-up, a reload that touched every job) is done in slices of about 5 ms with
the loop served in between.
"""

from __future__ import annotations

import json
from typing import Iterable

from koku.core.clock import Clock
from koku.core.runner import JobRunner
from koku.daemon.clock import Pacer

SLICE = 0.005  # seconds of encoding between two yields to the loop
# What `ku status` prints a row from (StatusBrief): a fifth of a full JobStatus, so a fifth to read.
BRIEF = ("name", "state", "last_run", "last_exit", "last_outcome", "last_signal", "next_run")

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class StatusCache:
    def __init__(self, clock: Clock):
        self.clock = clock
        self._fragments: dict[str, bytes] = {}
        self._brief: dict[str, bytes] = {}
        self.encoded = 0  # fragments encoded so far (tests and curiosity)

    def discard(self, name: str) -> None:
        self._fragments.pop(name, None)
        self._brief.pop(name, None)

    def clear(self) -> None:
        self._fragments.clear()
        self._brief.clear()

    def answer(self, runners: Iterable[JobRunner], brief: bool = False) -> bytes:
        """The whole ``{"Status": [...]}`` line, newline included; with ``brief`` ``{"StatusBrief": [...]}``,
        each job with only the BRIEF keys. Yields to the loop while encoding; ``runners`` is copied first, so a reload
        meanwhile cannot change what is being answered."""
        fragments = self._brief if brief else self._fragments
        parts = []
        pacer = Pacer(self.clock, SLICE)
        for runner in list(runners):
            name = runner.cfg.name
            part = fragments.get(name)
            if part is None:
                # Stored before any yield: a change that arrives during a later yield discards it.
                status = runner.status()
                if brief:
                    status = {key: status.get(key) for key in BRIEF}
                part = fragments[name] = _encode(status).encode()
                self.encoded += 1
                pacer.pace()
            parts.append(part)
        return (b'{"StatusBrief":[' if brief else b'{"Status":[') + b",".join(parts) + b"]}\n"
