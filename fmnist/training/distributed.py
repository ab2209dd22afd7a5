"""Training over several processes and machines with ``torchrun``: the process group, and the
few collective operations the training engine needs. Outside torchrun everything here is a
no-op for a world of one process.

Launch (one machine, N processes; several machines: the same command on each, with
``--nnodes M --node-rank K --rdzv-backend c10d --rdzv-endpoint HOST:PORT``)::

    torchrun --nproc-per-node N -m fmnist train --preset quick

gloo on CPUs, NCCL on CUDA GPUs (one per process, ``cuda:LOCAL_RANK``).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from fmnist.core.errors import FmnistError

TIMEOUT = datetime.timedelta(minutes=10)


@dataclass
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str | None = None  # None: a single process, no process group

    @property
    def main(self) -> bool:
        """Rank 0: the only process that prints and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """The element-wise sum of ``values`` over all processes (float64, exact for counts)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool, device: torch.device) -> bool:
        """Whether any process has ``flag`` set (e.g. a stop request one of them received)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast(self, tensors: list[torch.Tensor], src: int = 0) -> None:
        """Overwrite ``tensors`` in place with process ``src``'s values."""
        if self.distributed:
            for t in tensors:
                dist.broadcast(t, src)

    def gather(self, obj) -> list:
        """``obj`` from every process, in rank order (small JSON-like objects only)."""
        if not self.distributed:
            return [obj]
        out: list = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def share(self, obj, src: int = 0):
        """Process ``src``'s ``obj`` on every process (small JSON-like objects only)."""
        if not self.distributed:
            return obj
        box = [obj if self.rank == src else None]
        dist.broadcast_object_list(box, src)
        return box[0]

    def share_tensors(self, tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """Rank 0's ``tensors`` on every process (CPU copies; the others pass ``{}``)."""
        if not self.distributed:
            return tensors
        specs = self.share({k: (list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in tensors.items()})
        names = sorted(specs)
        # NCCL sends only GPU tensors; gloo sends CPU ones.
        on_device = {
            k: (tensors[k] if self.main else torch.empty(specs[k][0], dtype=getattr(torch, specs[k][1]))).to(device)
            for k in names
        }
        self.broadcast([on_device[k] for k in names])
        return {k: v.cpu() for k, v in on_device.items()}

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()


def under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join(device_name: str) -> tuple[World, torch.device | None]:
    """Join the process group torchrun set up (if any). Returns the world and, under
    torchrun with CUDA, this process's GPU; None means "resolve the device as usual"."""
    if not under_torchrun():
        return World(), None
    try:
        rank, size, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except (KeyError, ValueError):
        raise FmnistError("WORLD_SIZE is set but RANK or LOCAL_RANK is not; launch with torchrun") from None
    use_cuda = device_name in ("auto", "cuda") or device_name.startswith("cuda")
    use_cuda = use_cuda and torch.cuda.is_available()
    device = None
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise FmnistError(
                f"local rank {local} has no GPU ({torch.cuda.device_count()} visible); "
                "use --nproc-per-node <= the number of GPUs"
            )
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    elif device_name not in ("auto", "cpu"):
        raise FmnistError(f"--device {device_name} under torchrun: use auto, cpu or cuda")
    backend = "nccl" if use_cuda else "gloo"
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=TIMEOUT)
        except (RuntimeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise FmnistError(
                f"cannot join the torchrun process group ({first}); check the rendezvous endpoint"
            ) from None
    return World(rank, size, local, backend), device or torch.device("cpu")
