"""The protocol's records as typed dicts: what ``koku.Client`` returns is the wire JSON itself, so a field
the daemon adds shows up without a new koku on the client side. docs/protocol.md and
docs/protocol.schema.json describe every field; these types name the ones tools rely on.

TypedDicts, not dataclasses: the client imports this at start-up and dataclasses costs ~9 ms to import.
"""

from __future__ import annotations

from typing import List, Optional, TypedDict

__all__ = ["JobStatus", "RunRecord", "DaemonInfo", "Notification"]


class Notification(TypedDict):
    notifier: str
    event: str
    delivered: Optional[bool]  # None while still pending
    answer: str


class RunRecord(TypedDict, total=False):
    run: int
    trigger: str  # "schedule" | "manual" | "catch_up" | "reboot"
    scheduled: Optional[str]  # ISO 8601 UTC; None for manual runs
    started: str
    ended: Optional[str]
    duration_s: Optional[float]
    outcome: Optional[str]  # "success" | "failure" | "timeout" | "error" | "interrupted" | "cancelled"
    description: str  # "exit status 2", "timed out after 30m; terminated by SIGTERM"
    exit_code: Optional[int]
    signal: Optional[int]
    pid: Optional[int]
    tail: List[str]
    notifications: List[Notification]


class JobStatus(TypedDict, total=False):
    name: str
    state: str  # exactly one of "idle" | "running" | "paused" | "failing" | "stopped"
    last_run: Optional[str]
    last_exit: Optional[int]
    next_run: Optional[str]
    schedule: str
    tz: Optional[str]
    command: str
    description: str
    on_error: str
    pid: Optional[int]
    pids: List[int]
    running_since: Optional[str]
    last_outcome: Optional[str]
    last_description: Optional[str]
    last_signal: Optional[int]
    last_duration_s: Optional[float]
    consecutive_failures: int
    skips_left: int
    paused_until: Optional[str]
    skipped: int
    runs: int
    file: str


class DaemonInfo(TypedDict, total=False):
    pid: int
    version: str
    protocol: int  # the protocol's version (docs/api.md: how it changes)
    started: str
    uptime_s: float
    config: str
    jobs: int
    running: int
    socket: str
    state_dir: str
    python: str
    containment: str
