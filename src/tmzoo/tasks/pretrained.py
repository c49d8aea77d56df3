"""Loading the encoder weights of a pretrained checkpoint into a fine-tuning task."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from tmzoo.checkpoints import safe_load
from tmzoo.checkpoints.bundle import load_state_strict, spec_and_state

ENCODER_PREFIX = "encoder."


def read_encoder_state(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """``(encoder state_dict, spec)`` from a tmzoo ``.ckpt``/bundle or a released Transformer-M file.

    ``spec`` is the checkpoint's ``tmzoo`` entry (empty for a bare Lightning checkpoint).
    """
    try:
        spec, state = spec_and_state(safe_load(path), require_spec=False)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    encoder = {k[len(ENCODER_PREFIX) :]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}
    if not encoder:
        raise ValueError(f"{path} holds no encoder weights (no keys starting with {ENCODER_PREFIX!r})")
    return encoder, spec


def load_pretrained_encoder(encoder: nn.Module, path: str | Path) -> dict:
    """Copy the encoder weights of ``path`` into ``encoder``; returns the checkpoint's spec.

    Every tensor must be present with the same shape: a missing, unexpected or mis-shaped
    tensor raises ``ValueError`` naming it.
    """
    state, spec = read_encoder_state(path)
    try:
        load_state_strict({"encoder": encoder}, {ENCODER_PREFIX + k: v for k, v in state.items()})
    except ValueError as err:
        raise ValueError(
            f"pretrained encoder in {path}: {err}; the experiment's encoder arguments must match "
            "the pretrained model"
        ) from None
    return spec
