"""What an encoder hands to its heads."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from torch import Tensor


class Mode(IntEnum):
    """Which structural channels a molecule is read with (the reference's mode codes)."""

    BOTH = 0  # 2D + 3D
    ONLY_2D = 1
    ONLY_3D = 2

    @classmethod
    def parse(cls, name: str) -> "Mode":
        names = {"2d3d": cls.BOTH, "2d+3d": cls.BOTH, "both": cls.BOTH, "2d": cls.ONLY_2D, "3d": cls.ONLY_3D}
        try:
            return names[name.lower()]
        except KeyError:
            raise ValueError(f"unknown mode {name!r}; expected one of {sorted(names)}") from None


@dataclass
class EncoderOutput:
    """Token states and the structural context the heads may use.

    ``tokens[:, 0]`` is the graph token, ``tokens[:, 1:]`` the atoms; ``atom_mask`` is True on
    real atoms. Transformer-M also returns its attention bias (``[B, H, N+1, N+1]``), the
    unit pair directions (``[B, N, N, 3]``, zero where the 3D channel is off) and the mode
    each molecule was read with; other encoders leave them ``None``.
    """

    tokens: Tensor
    atom_mask: Tensor
    bias: Tensor | None = None
    direction: Tensor | None = None
    modes: Tensor | None = None

    @property
    def graph(self) -> Tensor:
        return self.tokens[:, 0]

    @property
    def atoms(self) -> Tensor:
        return self.tokens[:, 1:]
