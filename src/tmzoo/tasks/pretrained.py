"""Loading the encoder weights of a pretrained checkpoint into a fine-tuning task."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from tmzoo.checkpoints import safe_load
from tmzoo.checkpoints.official import convert_official, is_official

ENCODER_PREFIX = "encoder."


def read_encoder_state(path: str | Path) -> tuple[dict[str, Tensor], dict]:
    """``(encoder state_dict, spec)`` from a tmzoo ``.ckpt``/bundle or a released Transformer-M file.

    ``spec`` is the checkpoint's ``tmzoo`` entry (empty for a bare Lightning checkpoint).
    """
    checkpoint = safe_load(path)
    if is_official(checkpoint):
        spec, state = convert_official(checkpoint)
    elif isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        spec, state = checkpoint.get("tmzoo") or {}, checkpoint["state_dict"]
    else:
        raise ValueError(f"{path} is neither a tmzoo/Lightning checkpoint nor a released Transformer-M file")
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
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"pretrained encoder in {path} does not match the model: "
            f"missing {[ENCODER_PREFIX + k for k in missing[:8]]}, "
            f"unexpected {[ENCODER_PREFIX + k for k in unexpected[:8]]}"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"tensor {ENCODER_PREFIX}{key} has shape {tuple(value.shape)} in {path} but "
                f"{tuple(expected[key].shape)} in the model; the experiment's encoder arguments "
                "must match the pretrained model"
            )
    encoder.load_state_dict(state)
    return spec
