"""What an encoder hands to its heads."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


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
