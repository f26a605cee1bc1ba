"""The processes sharing one job, as `accelerate launch` starts them: an evaluation, a latent cache build.

    accelerate launch --multi_gpu --num_processes 8 -m theworld eval --model ... --output-dir OUT
    accelerate launch --multi_gpu --num_processes 8 -m theworld cache-latents --config train.yaml

Every process loads its model on its own device and works on a share of the items; the main
process alone writes what is shared (an evaluation's merged files and metrics, a cache's manifest).
A job started by plain `python` or `theworld` is one process. On a machine without a GPU,
`--multi_gpu` still starts the processes (gloo); accelerate's `--cpu` flag alone starts one.

`Processes` is the little these jobs need from the launcher: this process's index, the count,
a barrier, and gathering or sharing small Python objects. Collective calls go through Accelerate
(`PartialState`, gloo on CPUs, NCCL on GPUs); one process needs none of it.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from theworld.errors import TheWorldUserError

T = TypeVar("T")


@dataclass
class Processes:
    """This process's `index` among `count` processes (index 0 is the main one)."""

    index: int = 0
    count: int = 1
    state: Any = None  # accelerate.PartialState when count > 1

    @classmethod
    def from_environment(cls) -> Processes:
        """The processes `accelerate launch` (or torchrun) started, from WORLD_SIZE; else this one alone."""
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return cls()
        from accelerate import PartialState

        # Without a GPU Accelerate must be told (cpu=True): else it reports one process each (accelerate 1.15).
        state = PartialState(cpu=not torch.cuda.is_available())
        # Leave the process group before the interpreter exits, whatever the exit: a gloo group
        # still alive then can abort the process ("terminate called without an active exception",
        # exit code -6) after its work is done, failing the launch.
        atexit.register(state.destroy_process_group)
        return cls(index=state.process_index, count=state.num_processes, state=state)

    @property
    def is_main(self) -> bool:
        return self.index == 0

    @property
    def device(self) -> torch.device | None:
        """The device the launcher gave this process (cuda:<local rank>, or cpu); None when alone."""
        if self.state is None:
            return None
        device = self.state.device
        return torch.device("cpu") if device.type == "cpu" else device

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's share of `items`: every `count`-th one, from its `index`."""
        return list(items[self.index :: self.count])

    def wait(self) -> None:
        """Barrier: return when every process has called it."""
        if self.state is not None:
            self.state.wait_for_everyone()

    def gather(self, value: T) -> list[T]:
        """Every process's `value` (picklable), in process order, on every process."""
        if self.state is None:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.count
        dist.all_gather_object(values, value)
        return values

    def main_first(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the main process while the others wait, then give them its result.

        A `TheWorldUserError` raised there is raised on every process (the others would wait
        forever at the next barrier otherwise).
        """
        result: tuple[bool, Any] = (True, None)
        if self.is_main:
            try:
                result = (True, fn())
            except TheWorldUserError as err:
                if self.state is None:
                    raise
                result = (False, str(err))
        if self.state is not None:
            import torch.distributed as dist

            box = [result]
            dist.broadcast_object_list(box, src=0)
            result = box[0]
        ok, value = result
        if not ok:
            raise TheWorldUserError(value)
        return value
