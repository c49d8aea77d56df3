"""Learning-rate schedules usable from YAML as ``LRSchedulerCallable``."""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


class WarmupLinearDecay(LRScheduler):
    """Linear warm-up to the optimizer's lr over ``warmup_steps``, then linear decay to
    ``end_lr`` at ``total_steps`` (the reference's polynomial-decay schedule with power 1).

    Lengths left ``None`` come from the run (:meth:`set_run_length`, called by the tasks with
    the trainer's number of optimizer steps): ``total_steps`` = the run's steps,
    ``warmup_steps`` = ``warmup_fraction`` of them. A run shorter than its warm-up is warned
    about. Until the run length is known the lr stays at its peak after a given warm-up. Step
    it every optimizer step (the tasks register it with ``interval: step``).
    """

    def __init__(
        self,
        optimizer: Optimizer,
        warmup_steps: int | None = 0,
        total_steps: int | None = None,
        end_lr: float = 1e-9,
        warmup_fraction: float = 0.1,
        last_epoch: int = -1,
    ):
        if warmup_steps is not None and warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction}")
        self.warmup_steps = None if warmup_steps is None else int(warmup_steps)
        self.total_steps = None if total_steps is None else int(total_steps)
        self.end_lr = float(end_lr)
        self.warmup_fraction = float(warmup_fraction)
        super().__init__(optimizer, last_epoch)

    def set_run_length(self, run_steps: int | None) -> None:
        """Fill the lengths left ``None`` from the run's ``run_steps`` optimizer steps, warn
        when the run ends before its warm-up, and re-apply the lr of the current step."""
        if self.total_steps is None:
            if run_steps is None:
                raise ValueError(
                    "the learning-rate schedule needs a run length: set trainer.max_steps or "
                    "trainer.max_epochs, or lr_scheduler.init_args.total_steps"
                )
            self.total_steps = int(run_steps)
        if self.warmup_steps is None:
            self.warmup_steps = int(round(self.warmup_fraction * self.total_steps))
            rank_zero_info(f"lr schedule: {self.warmup_steps} warm-up steps of {self.total_steps}")
        if run_steps is not None and run_steps < self.warmup_steps:
            rank_zero_warn(
                f"the run has {run_steps} optimizer steps but the lr warm-up lasts {self.warmup_steps}: "
                f"the lr never reaches its peak (it ends at {run_steps / max(self.warmup_steps, 1):.1%} of it); "
                "leave lr_scheduler.init_args.warmup_steps null to derive it from the run"
            )
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def lr_at(self, step: int, peak: float) -> float:
        """The lr after ``step`` optimizer steps for a peak lr ``peak``."""
        warmup = self.warmup_steps or 0
        if step < warmup:
            return peak * (step + 1) / warmup
        if self.total_steps is None or self.total_steps <= warmup:
            return peak
        progress = min(1.0, (step - warmup) / (self.total_steps - warmup))
        return peak + (self.end_lr - peak) * progress

    def get_lr(self) -> list[float]:
        return [self.lr_at(self.last_epoch, peak) for peak in self.base_lrs]
