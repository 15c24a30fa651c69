"""Every collective training makes, in one place: the processes' shared view of a run.

The Trainer, the loss (path-length mean), ADA's sign statistics, checkpoints and the stop
signal all talk to the other processes through a :class:`ProcessGroup`, never through
``torch.distributed`` or the launcher directly. It wraps Hugging Face accelerate's process
group (NCCL on GPUs, gloo on CPUs); with one process every operation is the identity and no
collective is issued.
"""

from __future__ import annotations

from typing import Any

import torch


class ProcessGroup:
    """The collectives of a training run over ``accelerator``'s processes."""

    def __init__(self, accelerator: Any) -> None:
        self.acc = accelerator
        self.num_processes: int = accelerator.num_processes
        self.process_index: int = accelerator.process_index
        self.is_main_process: bool = accelerator.is_main_process
        # The first process on each machine (per-machine work such as the shared dataset copy).
        self.is_local_main_process: bool = getattr(accelerator, "is_local_main_process", accelerator.is_main_process)

    @property
    def distributed(self) -> bool:
        return self.num_processes > 1

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of ``tensor`` over processes (``tensor`` itself with one process)."""
        return self.acc.reduce(tensor, reduction="mean") if self.distributed else tensor

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise sum of ``tensor`` over processes."""
        return self.acc.reduce(tensor, reduction="sum") if self.distributed else tensor

    def from_main(self, value: float, device: torch.device | str = "cpu") -> float:
        """The main process's ``value`` on every process, so that all take the same decision."""
        if not self.distributed:
            return value
        mine = torch.tensor([value if self.is_main_process else 0.0], device=device)
        return float(self.sum(mine).item())

    def broadcast_object(self, obj: Any) -> Any:
        """A picklable object from the main process, on every process."""
        if not self.distributed:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]

    def wait_for_everyone(self) -> None:
        """A barrier (a no-op with one process)."""
        if self.distributed:
            self.acc.wait_for_everyone()


def leave_process_group() -> None:
    """Tear the process group down before the interpreter exits.

    A gloo group left to interpreter shutdown can abort a rank after a finished run
    ("terminate called without an active exception", exit -6). Call it once every collective of
    the run is behind this process; leaving is purely local.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
