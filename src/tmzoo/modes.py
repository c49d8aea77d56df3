"""The modes a molecule is read with (2D+3D, 2D, 3D): codes, names and the training distribution."""

from __future__ import annotations

from enum import IntEnum
from typing import Literal, Sequence, get_args

import torch
from torch import Tensor


class Mode(IntEnum):
    """Which structural channels a molecule is read with (the reference's mode codes)."""

    BOTH = 0  # 2D + 3D
    ONLY_2D = 1
    ONLY_3D = 2

    @classmethod
    def parse(cls, name: str) -> "Mode":
        names = {**{n: m for m, n in MODE_NAMES.items()}, "2d+3d": cls.BOTH, "both": cls.BOTH}
        try:
            return names[name.lower()]
        except KeyError:
            raise ValueError(f"unknown mode {name!r}; expected one of {sorted(names)}") from None


#: A mode by name, as configs, checkpoints (``eval_mode``) and prediction files write it.
EvalMode = Literal["2d3d", "2d", "3d"]
MODE_NAMES = dict(zip(Mode, get_args(EvalMode)))

#: What a user may ask a record to be read with: a mode by name, or ``auto`` (from the record
#: and the checkpoint's ``eval_mode``).
MODES = ("auto", *get_args(EvalMode))


def mode_probs_tensor(mode_probs: Sequence[float]) -> Tensor:
    """(p_2D+3D, p_2D, p_3D) as a CPU tensor; ``ValueError`` unless 3 non-negative numbers summing to 1."""
    probs = torch.tensor([float(p) for p in mode_probs], device="cpu")  # CPU: checkable on meta too
    if probs.numel() != 3 or (probs < 0).any() or abs(float(probs.sum()) - 1.0) > 1e-6:
        raise ValueError(f"mode_probs must be 3 non-negative numbers summing to 1, got {list(mode_probs)}")
    return probs
