"""What a job's child becomes before exec: uid, gid, supplementary groups, umask, nice. Daemon side."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Credentials:
    """Who the child becomes before exec (None: keep the daemon's), all on the C path: the stdlib's
    fork_exec calls setgroups, setregid, setreuid and umask in the child, no Python runs there.
    ``nice`` is applied by exec'ing nice(1) in front of the shell (same pid): the C path has no nice
    option, and a preexec_fn would run Python in the child."""

    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] | None = None
    umask: int | None = None
    nice: int | None = None
    nice_program: str = "/usr/bin/nice"

    def argv(self, argv: list[str]) -> list[str]:
        return argv if self.nice is None else [self.nice_program, "-n", str(self.nice), *argv]

    def popen_kwargs(self) -> dict[str, object]:
        kwargs: dict[str, object] = {}
        if self.uid is not None:
            kwargs["user"] = self.uid
        if self.gid is not None:
            kwargs["group"] = self.gid
        if self.groups is not None:
            kwargs["extra_groups"] = list(self.groups)
        if self.umask is not None:
            kwargs["umask"] = self.umask
        return kwargs


NO_CREDENTIALS = Credentials()
