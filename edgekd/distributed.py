"""One build on many processes (``torchrun ... -m edgekd build``): the process group, who this rank is, and the
few ways ranks share work. Everything distributed in edgekd goes through here.

torchrun (or a scheduler wrapping it) sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``; ``session`` then joins the
group (gloo on the CPU, nccl on a GPU, one GPU per local rank) with a timeout, so a rank blocked on a peer that
went away fails instead of hanging; without those variables nothing here starts a group and every helper is the
single-process identity. The ranks share the training (``distill/loop.py``: DistributedDataParallel, sharded data,
metrics all-reduced); rank 0 alone does what must happen once (choosing the student, writing caches, the run
directory, exporting, benchmarking) inside ``from_main``, while the others wait for its result, or for its failure,
which they then share without a second message (``MainFailed``: the CLI exits with rank 0's code).

Two groups: the default one (``EDGEKD_DIST_TIMEOUT_S``, 30 minutes) carries training collectives, where a long
wait means a lost peer; a gloo one (``EDGEKD_DIST_WAIT_S``, 24 hours) carries ``from_main``'s results, where the
other ranks may wait as long as rank 0's exports and benchmarks take. torchrun's agent stops every rank when one
exits with an error, so a failed rank never leaves the others waiting out these timeouts on one machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from edgekd.errors import EdgekdError

T = TypeVar("T")
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
TIMEOUT_ENV, DEFAULT_TIMEOUT_S = "EDGEKD_DIST_TIMEOUT_S", 1800
WAIT_ENV, DEFAULT_WAIT_S = "EDGEKD_DIST_WAIT_S", 86_400


@dataclass(frozen=True)
class World:
    """This process's place in the job; ``World()`` is the single-process build."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # gloo | nccl; None without a process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class MainFailed(Exception):  # noqa: N818 - not an error of this rank: rank 0 failed and said why
    """Raised on the other ranks when work rank 0 did for all of them failed: they exit with its code, silently."""

    def __init__(self, exit_code: int) -> None:
        super().__init__(f"rank 0 failed (exit {exit_code})")
        self.exit_code = exit_code


class _Group:
    """The module's state: the long-wait gloo group, and how deep rank 0 is in work of its own."""

    wait: Any = None
    solo_depth: int = 0


def under_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    return all(name in environ for name in TORCHRUN_ENV)


def _seconds(environ: Mapping[str, str], name: str, default: int) -> timedelta:
    text = environ.get(name, str(default))
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise EdgekdError(f"{name}={text!r} is not a positive number of seconds",
                          f"set {name} to seconds, e.g. {default} (or unset it)")
    return timedelta(seconds=value)


def _initialized() -> bool:
    import torch.distributed as dist  # lazy: the CLI imports this module and must not load torch

    return dist.is_available() and dist.is_initialized()


def init(environ: Mapping[str, str] = os.environ) -> World:
    """Join the group torchrun's variables describe: nccl with this local rank's GPU, else gloo."""
    import torch  # lazy: the CLI imports this module and must not load torch
    import torch.distributed as dist  # lazy: the CLI imports this module and must not load torch

    timeout, wait = _seconds(environ, TIMEOUT_ENV, DEFAULT_TIMEOUT_S), _seconds(environ, WAIT_ENV, DEFAULT_WAIT_S)
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(environ["LOCAL_RANK"]) % torch.cuda.device_count())
    dist.init_process_group(backend, timeout=timeout)
    _Group.wait = dist.new_group(backend="gloo", timeout=wait)
    return world()


def teardown() -> None:
    import torch.distributed as dist  # lazy: the CLI imports this module and must not load torch

    _Group.wait, _Group.solo_depth = None, 0
    if _initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def session(enabled: bool = True) -> Iterator[World]:
    """Under torchrun (and ``enabled``): the group for the block, torn down on every exit; else ``World()``."""
    if not enabled or not under_torchrun() or _initialized():
        yield world()
        return
    try:
        yield init()
    finally:
        teardown()


def world() -> World:
    """This rank, or ``World()`` outside a group and inside rank 0's own work (``solo``)."""
    if _Group.solo_depth or not _initialized():
        return World()
    import torch.distributed as dist  # lazy: the CLI imports this module and must not load torch

    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")),
                 dist.get_backend())


def job_world() -> World:
    """The whole job even inside ``solo``: what the report records."""
    depth, _Group.solo_depth = _Group.solo_depth, 0
    try:
        return world()
    finally:
        _Group.solo_depth = depth


def is_main() -> bool:
    return world().is_main


@contextlib.contextmanager
def solo() -> Iterator[None]:
    """Rank 0's own work: inside, it is a single-process build (no DDP, no collectives) while the others wait."""
    _Group.solo_depth += 1
    try:
        yield
    finally:
        _Group.solo_depth -= 1


def barrier() -> None:
    if world().size > 1:
        import torch.distributed as dist  # lazy: the CLI imports this module and must not load torch

        dist.barrier()


def _broadcast(value: Any) -> Any:
    """Rank 0's ``value`` on every rank, over the long-wait group."""
    import torch.distributed as dist  # lazy: the CLI imports this module and must not load torch

    box = [value]
    dist.broadcast_object_list(box, src=0, group=_Group.wait)
    return box[0]


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt):
        return 130
    return int(getattr(exc, "exit_code", 3))


def from_main(fn: Callable[[], T]) -> T:
    """``fn()`` run by rank 0 alone (as a single process) and its result handed to every rank.

    When it fails on rank 0, rank 0 raises as usual and the others raise ``MainFailed`` with its exit code.
    """
    if world().size == 1:
        return fn()
    if not world().is_main:
        status, value = _broadcast(None)
        if status == "failed":
            raise MainFailed(value)
        return value
    try:
        with solo():
            value = fn()
    except BaseException as exc:
        _broadcast(("failed", _exit_code(exc)))
        raise
    return _broadcast(("ok", value))[1]


def main_first(fn: Callable[[], T]) -> T:
    """``fn()`` on every rank, rank 0 first: what it writes (a data cache) the others then read, and bad input it
    finds is one message (the others exit with its code)."""
    if world().size == 1:
        return fn()
    if world().is_main:
        made: list[T] = []
        from_main(lambda: made.append(fn()))  # the others hear "done" (or rank 0's failure), not the value
        return made[0]
    from_main(lambda: None)
    return fn()


def shard(n: int) -> tuple[int, int, int]:
    """(start, stop, rows per rank) of this rank's contiguous share of ``n`` items; the last shards may be short."""
    w = world()
    per = -(-n // w.size)
    start = min(n, w.rank * per)
    return start, min(n, start + per), per


def all_gather(tensor: Any) -> list[Any]:
    """Every rank's ``tensor`` (same shape on each), rank order, on the CPU; nccl gathers on this rank's GPU."""
    w = world()
    if w.size == 1:
        return [tensor]
    import torch  # lazy: the CLI imports this module and must not load torch
    import torch.distributed as dist  # lazy: the CLI imports this module and must not load torch

    device = torch.device("cuda", torch.cuda.current_device()) if w.backend == "nccl" else torch.device("cpu")
    mine = tensor.to(device).contiguous()
    parts = [torch.empty_like(mine) for _ in range(w.size)]
    dist.all_gather(parts, mine)
    return [p.cpu() for p in parts]


def broadcast_module(module: Any) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank: DDP keeps parameters equal, each rank's last batch
    moves its own running statistics."""
    if world().size == 1:
        return
    import torch.distributed as dist  # lazy: the CLI imports this module and must not load torch

    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def all_reduce_sum(tensor: Any) -> Any:
    """The sum over ranks of a small CPU tensor (epoch loss sums, correct counts), on the CPU."""
    w = world()
    if w.size == 1:
        return tensor
    import torch  # lazy: the CLI imports this module and must not load torch
    import torch.distributed as dist  # lazy: the CLI imports this module and must not load torch

    device = torch.device("cuda", torch.cuda.current_device()) if w.backend == "nccl" else torch.device("cpu")
    total = tensor.to(device)
    dist.all_reduce(total)
    return total.cpu()


# How gloo and nccl say that a peer is gone (they raise plain RuntimeErrors): a rank that failed or was stopped.
_LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "gloo/transport", "NCCL", "Timed out")


def lost_peer(exc: BaseException) -> bool:
    """Under torchrun: a collective failed because another rank went away (its own message says why), not a bug."""
    import torch.distributed as dist  # lazy: the CLI imports this module and must not load torch

    return isinstance(exc, RuntimeError) and (
        isinstance(exc, dist.DistError) or any(marker in str(exc) for marker in _LOST_PEER))
