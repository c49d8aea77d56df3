"""Learning-rate schedules usable from YAML as ``LRSchedulerCallable``."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupLinearDecay(LRScheduler):
    """Linear warm-up to the optimizer's lr over ``warmup_steps``, then linear decay to
    ``end_lr`` at ``total_steps`` (the reference's polynomial-decay schedule with power 1).

    ``total_steps=None`` is filled in by the task with the trainer's estimated number of
    optimizer steps; until then the lr stays at its peak after warm-up. Step it every
    optimizer step (the tasks register it with ``interval: step``).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int = 0,
        total_steps: int | None = None,
        end_lr: float = 1e-9,
        last_epoch: int = -1,
    ):
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.end_lr = float(end_lr)
        super().__init__(optimizer, last_epoch)

    def lr_at(self, step: int, peak: float) -> float:
        """The lr after ``step`` optimizer steps for a peak lr ``peak``."""
        if step < self.warmup_steps:
            return peak * (step + 1) / self.warmup_steps
        if self.total_steps is None or self.total_steps <= self.warmup_steps:
            return peak
        progress = min(1.0, (step - self.warmup_steps) / (self.total_steps - self.warmup_steps))
        return peak + (self.end_lr - peak) * progress

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, peak) for peak in self.base_lrs]
