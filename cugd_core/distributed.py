"""Folder inference on several processes and machines: `torchrun ... -m cugd_core enhance IN -o OUT`.

Every rank lists the same inputs in the same (sorted) order and takes every `world`-th job from its
rank on: a deterministic share that does not depend on what is already done, so a rank started
late, or a rerun after a crash, agrees with the others. Images are independent (each has its own
seeded noise), so an image's output is the same whichever rank makes it and however many ranks
there are. Outputs are written atomically and existing ones skipped, so a rank that dies loses
only the images it had in flight and a rerun resumes. Rank 0 gathers the counts (gloo, which
every build of torch has) and prints the one summary.

    torchrun --nnodes N --nproc_per_node K --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
             -m cugd_core enhance IN -o OUT     # IN and OUT on a file system all machines share
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence, TypeVar

import torch

from .pipeline import Report

T = TypeVar("T")
# a rank waits at the end for the slowest; shares differ by at most one image, but images can be large
GATHER_TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class Ranks:
    """This process's place among the processes `torchrun` started (1 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def leader(self) -> bool:
        return self.rank == 0


def from_env(env=os.environ) -> Ranks:
    """The ranks `torchrun` describes in RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE."""
    world = int(env.get("WORLD_SIZE", "1"))
    ranks = Ranks(int(env.get("RANK", "0")), world, int(env.get("LOCAL_RANK", "0")),
                  int(env.get("LOCAL_WORLD_SIZE", str(world))))
    if not 0 <= ranks.rank < ranks.world:
        raise ValueError(f"RANK={ranks.rank} is outside WORLD_SIZE={ranks.world}; start the processes with torchrun")
    return ranks


def shard(items: Sequence[T], ranks: Ranks) -> list[T]:
    """This rank's share: items rank, rank + world, rank + 2 world, ... (balanced to one item)."""
    return list(items[ranks.rank::ranks.world])


def device_for(device: str, ranks: Ranks) -> str:
    """`--device auto|cuda` on a machine with several ranks -> this rank's own GPU (`cuda:LOCAL_RANK`)."""
    if ranks.active and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ranks.local_rank % torch.cuda.device_count()}"
    return device


def join(ranks: Ranks) -> None:
    """Join the process group (gloo: only counts travel) and share this machine's cores between its ranks."""
    import torch.distributed as dist

    if not ranks.active or dist.is_initialized():
        return
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // ranks.local_world))
    dist.init_process_group("gloo", timeout=GATHER_TIMEOUT)


def gather(obj: T, ranks: Ranks) -> list[T]:
    """Every rank's `obj` (picklable), in rank order, on every rank; then leave the group."""
    import torch.distributed as dist

    if not ranks.active:
        return [obj]
    out: list = [None] * ranks.world
    dist.all_gather_object(out, obj)
    dist.destroy_process_group()
    return out


def merge_reports(reports: Sequence):
    """The ranks' `pipeline.Report`s as one: counts added, failures listed, the slowest rank's time."""
    return Report(done=sum(r.done for r in reports), skipped=sum(r.skipped for r in reports),
                  failed=[f for r in reports for f in r.failed], seconds=max(r.seconds for r in reports),
                  interrupted=any(r.interrupted for r in reports))
