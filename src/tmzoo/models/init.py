"""The reference initialisation: N(0, 0.02) everywhere, zero biases and padding rows."""

from __future__ import annotations

from torch import nn


def init_transformer_m_(module: nn.Module) -> None:
    """Initialise one module in place (use with ``model.apply``)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if module.padding_idx is not None:
            nn.init.zeros_(module.weight[module.padding_idx])
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
