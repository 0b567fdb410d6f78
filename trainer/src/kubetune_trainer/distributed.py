"""Process topology from the environment (torchrun, the operator, or none).

The same code runs single-process and under `torchrun --nnodes N
--nproc-per-node G`: torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/
MASTER_PORT, and per node GROUP_RANK/GROUP_WORLD_SIZE; the run joins the
process group from them before building anything (`init_process_group`) and
the Trainer adopts that group. Rank 0 alone logs, serves the job-level metrics
and commits checkpoints; local rank 0 of each node downloads what the node
needs and uploads the checkpoint files its node wrote.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Topology:
    rank: int
    world_size: int
    local_rank: int
    node_rank: int = 0  # torchrun's GROUP_RANK: the pod's completion index
    nodes: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        return self.local_rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def topology() -> Topology:
    env = os.environ
    rank, world = int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1"))
    per_node = int(env.get("LOCAL_WORLD_SIZE", str(world)))
    return Topology(rank=rank, world_size=world, local_rank=int(env.get("LOCAL_RANK", "0")),
                    node_rank=int(env.get("GROUP_RANK", str(rank // per_node))),
                    nodes=int(env.get("GROUP_WORLD_SIZE", str(max(1, world // per_node)))))


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool) -> bool:
    """True on every rank if flag is true on any (so all ranks stop at the same step)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast_object(obj):
    """rank 0's obj on every rank."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def init_process_group(topo: Topology, strategy: str, cuda: bool) -> None:
    """Join the process group early, so downloads can be coordinated; the Trainer adopts it."""
    import torch

    if not topo.distributed or torch.distributed.is_initialized():
        return
    if cuda:
        torch.cuda.set_device(topo.local_rank)
    if strategy == "deepspeed":
        # DeepSpeed keeps its own view of the group (ZeRO-3's zero.Init during
        # from_pretrained reads it); it initialises torch's too.
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo")
    else:
        torch.distributed.init_process_group("nccl" if cuda else "gloo")


def local_main_first(topo: Topology, fn):
    """fn() on local rank 0 first (it downloads), then on the others (cache hits)."""
    result = fn() if topo.is_local_main else None
    barrier()
    if not topo.is_local_main:
        result = fn()
    return result
