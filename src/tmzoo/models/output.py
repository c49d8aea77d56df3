"""What an encoder hands to its heads."""

from __future__ import annotations

import inspect
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
        if self.tokens.shape[1] != self.atom_mask.shape[1] + 1:
            raise ValueError("this output holds the graph token only (encoded with graph_only)")
        return self.tokens[:, 1:]


def init_arguments(module) -> dict:
    """The arguments ``module.__init__`` was called with (read from the calling frame), as a
    plain dict: a module's ``config``, what a checkpoint records to rebuild it. Call it first
    thing in ``__init__``, before any argument is reassigned."""
    frame = inspect.currentframe().f_back
    names = [p for p in inspect.signature(type(module).__init__).parameters if p != "self"]
    return {name: frame.f_locals[name] for name in names}
