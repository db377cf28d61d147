"""One process or many: what a training run needs to know about torchrun, and nothing more.

Under ``torchrun --nproc_per_node=N`` the environment carries ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; we join the
process group with ``gloo`` on the CPU and ``nccl`` on GPUs. Without torchrun everything is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.distributed as dist

from ..errors import UserError


class DeviceUnavailable(UserError, RuntimeError):
    """A requested device that is not a device name, or that this machine does not have."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: its rank, the number of processes, and the device it trains on.

    >>> DistributedContext()
    DistributedContext(rank=0, world_size=1, device=cpu)
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: Optional[str] = None  # the torch.distributed backend, None for a single process

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that logs, evaluates, plots and writes checkpoints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The average of ``value`` over all processes (a collective: every rank must call it)."""
        if not self.is_distributed:
            return value
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size

    def __repr__(self) -> str:
        backend = f", backend={self.backend}" if self.backend else ""
        return f"DistributedContext(rank={self.rank}, world_size={self.world_size}, device={self.device}{backend})"


def choose_device(request: str) -> torch.device:
    """``"auto"`` is the GPU when there is one; a device this machine lacks is a :class:`DeviceUnavailable`."""
    if request == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(request)
    except RuntimeError:  # torch's message lists twenty device types; ours names the ones a run can use
        raise DeviceUnavailable(f"--device {request!r} is not a device: use 'auto', 'cpu', 'cuda' or "
                                f"'cuda:N'") from None  # fmt: skip
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailable("--device cuda was asked for, but this machine has no usable CUDA GPU; "
                                "use --device cpu")  # fmt: skip
    count = torch.cuda.device_count() if device.type == "cuda" else 0
    if device.index is not None and device.index >= count > 0:
        raise DeviceUnavailable(f"--device {request} was asked for, but this machine has only {count} CUDA GPU(s) "
                                f"(cuda:0 to cuda:{count - 1})")  # fmt: skip
    return device


def will_be_main() -> bool:
    """Whether this process is (or, once :func:`init_distributed` runs, will be) rank 0: torchrun's ``RANK``."""
    return int(os.environ.get("WORLD_SIZE", "1")) <= 1 or int(os.environ.get("RANK", "0")) == 0


def init_distributed(device_request: str = "auto") -> DistributedContext:
    """Join the torchrun process group if there is one; otherwise a single-process context."""
    device = choose_device(device_request)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return DistributedContext(rank, world_size, local_rank, device, backend)


def shutdown_distributed(context: DistributedContext) -> None:
    if context.is_distributed and dist.is_initialized():
        dist.destroy_process_group()
