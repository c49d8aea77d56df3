"""Metrics torchmetrics lacks: the PDBBind "SD" (residual std of a linear fit)."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class FitResidualStd(Metric):
    """SD as reported on PDBBind: fit ``target ≈ a·pred + b`` by least squares and return
    ``sqrt(Σ residual² / (n − 1))``."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor) -> None:
        self.preds.append(preds.detach().reshape(-1).double())
        self.target.append(target.detach().reshape(-1).double())

    def compute(self) -> Tensor:
        p, y = dim_zero_cat(self.preds), dim_zero_cat(self.target)
        n = p.numel()
        if n < 3:
            return torch.tensor(float("nan"), device=p.device)
        pc = p - p.mean()
        var = (pc * pc).sum()
        slope = (pc * (y - y.mean())).sum() / var if var > 0 else torch.zeros((), dtype=p.dtype, device=p.device)
        intercept = y.mean() - slope * p.mean()
        residual = y - (slope * p + intercept)
        return ((residual**2).sum() / (n - 1)).sqrt().float()
