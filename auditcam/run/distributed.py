"""Several processes, one audit: ``torchrun --nproc_per_node=N [--nnodes=M ...] -m auditcam audit ...``.

Every process (rank) explains its own chunks of the dataset and writes their shards; rank 0
prepares the run folder before and, after everyone is done, merges, analyses and renders. No
tensors travel between processes — only small control messages, over a CPU (gloo) group, so
the same code runs on CPUs and GPUs.

Control messages follow one rule that keeps every rank in step when one fails: each message is
an all-gather that every rank joins, and a rank that stops (error, interrupt or normal end)
joins the next one with its exit code instead of its payload. Whoever sees such a code in a
gather stops too, with the same code, so all ranks exit alike and none waits for a rank that
has left.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch.distributed as dist

from auditcam.errors import InputError

STOP = "stop"
# a rank may wait this long for the others (the slowest rank's share, rank 0's report)
TIMEOUT = _dt.timedelta(hours=12)
NOT_DISTRIBUTED = "auditcam {command} runs in one process; under torchrun only `auditcam audit` runs"


class PeerStopped(Exception):
    """Another rank left the run; this one stops with the same exit code."""

    def __init__(self, rank: int, code: int, message: str) -> None:
        super().__init__(f"rank {rank} stopped the run (exit code {code}){': ' + message if message else ''}")
        self.rank, self.code = rank, code


@dataclass
class Group:
    """This process's place in the run: ``rank`` of ``world`` processes (``local_*``: on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    process_group: Any = None
    ended: bool = field(default=False)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def exchange(self, phase: str, payload: Any = None) -> list[Any]:
        """Every rank's ``payload`` for ``phase``, by rank; raises :class:`PeerStopped` if a rank
        joined with an exit code instead."""
        if self.world == 1:
            return [payload]
        gathered = self._gather((phase, payload))
        if any(entry[0] == STOP for entry in gathered):
            self.ended = True
            rank, code, message = _decide(gathered)
            raise PeerStopped(rank, code, message)
        return [entry[1] for entry in gathered]

    def stop(self, code: int, message: str = "") -> int:
        """Leave the run with ``code``; return the code every rank exits with."""
        if self.world == 1 or self.ended:
            return code
        self.ended = True
        gathered = self._gather((STOP, (code, message)))
        return _decide(gathered)[1]

    def _gather(self, entry: tuple[str, Any]) -> list[tuple[str, Any]]:
        gathered: list[Any] = [None] * self.world
        dist.all_gather_object(gathered, entry, group=self.process_group)
        return gathered


def _decide(gathered: list[tuple[str, Any]]) -> tuple[int, int, str]:
    """(rank, code, message) of the stop that decides: the first error (a code other than 0 pass
    and 1 fail), else rank 0's verdict, else the first stop."""
    stops = [(rank, *payload) for rank, (phase, payload) in enumerate(gathered) if phase == STOP]
    errors = [stop for stop in stops if stop[1] not in (0, 1)]
    leader = [stop for stop in stops if stop[0] == 0]
    return (errors or leader or stops)[0]


_current: Group | None = None


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several."""
    return _env_int("WORLD_SIZE", 1) > 1


@contextlib.contextmanager
def session() -> Iterator[Group]:
    """Join the process group torchrun set up (gloo, for control messages only) for the block;
    a single process gets a group of one."""
    global _current
    if not launched():
        yield Group()
        return
    created = not dist.is_initialized()
    if created:
        try:
            dist.init_process_group("gloo", timeout=TIMEOUT)
        except (RuntimeError, ValueError) as exc:
            raise InputError(f"torch.distributed: cannot join the process group ({exc})") from None
    _current = _group(dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo"))
    try:
        yield _current
    finally:
        _current = None
        if created:
            dist.destroy_process_group()


def _group(process_group: Any) -> Group:
    return Group(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=_env_int("LOCAL_RANK", 0),
        local_world=_env_int("LOCAL_WORLD_SIZE", 1),
        process_group=process_group,
    )


def current() -> Group:
    """The group of the running :func:`session`, or of a process group the caller initialised
    (a gloo subgroup is made for control messages), or a group of one."""
    global _current
    if _current is not None:
        return _current
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        _current = _group(dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo"))
        return _current
    return Group()
