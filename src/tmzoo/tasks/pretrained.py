"""The encoder of a pretrained checkpoint, built from the file's own settings, for fine-tuning."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from tmzoo.checkpoints import safe_load
from tmzoo.checkpoints.bundle import build_module, load_state_strict, module_spec, spec_and_state

ENCODER_PREFIX = "encoder."
#: encoder settings that change no tensor shape (training regularisation, mode draws, memory)
SHAPE_NEUTRAL = {"dropout", "attention_dropout", "activation_dropout", "droppath", "mode_probs", "recompute_3d"}


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


def encoder_spec(spec: dict) -> dict | None:
    """The ``{"class_path", "init_args"}`` of a checkpoint spec's encoder (``None`` if absent)."""
    encoder = (spec.get("modules") or {}).get("encoder")
    return encoder if isinstance(encoder, dict) and "class_path" in encoder else None


def describe_shape(args: dict) -> str:
    """``4 layers × 64`` for an encoder's settings (``?`` where unknown)."""
    return f"{args.get('num_layers', '?')} layers × {args.get('embed_dim', '?')}"


def settings_difference(theirs: dict, ours: dict) -> str:
    """``checkpoint: 4 layers × 64 (num_layers=4, embed_dim=64); config: 12 × 768 (...)``, over
    the settings that differ and change shapes; ``""`` when none do."""
    keys = [k for k in sorted(set(theirs) | set(ours)) if k not in SHAPE_NEUTRAL and theirs.get(k) != ours.get(k)]
    if not keys:
        return ""

    def side(args):
        return ", ".join(f"{k}={args.get(k, '(unset)')}" for k in keys)

    return (f"checkpoint: {describe_shape(theirs)} ({side(theirs)}); "
            f"config: {describe_shape(ours).replace(' layers', '')} ({side(ours)})")


def load_pretrained_encoder(encoder: nn.Module, path: str | Path) -> dict:
    """Copy the encoder weights of ``path`` into ``encoder``; returns the checkpoint's spec.

    Every tensor must be present with the same shape: a missing, unexpected or mis-shaped
    tensor raises ``ValueError`` that names the encoder settings that differ from the file's
    (``checkpoint: 4 layers × 64; config: 12 × 768``) and the first tensor concerned.
    """
    state, spec = read_encoder_state(path)
    _load_into(encoder, state, spec, path)
    return spec


def _load_into(encoder: nn.Module, state: dict[str, Tensor], spec: dict, path) -> None:
    try:
        load_state_strict({"encoder": encoder}, {ENCODER_PREFIX + k: v for k, v in state.items()})
    except ValueError as err:
        theirs = encoder_spec(spec)
        ours = module_spec(encoder)
        differs = ""
        if theirs is not None:
            if theirs["class_path"] != ours["class_path"]:
                differs = f"checkpoint: {theirs['class_path']}; config: {ours['class_path']}"
            else:
                differs = settings_difference(dict(theirs.get("init_args") or {}), ours["init_args"])
        raise ValueError(
            f"the encoder does not fit the pretrained weights in {path}"
            + (f" — {differs}" if differs else "")
            + f". Leave the encoder out of the config to build it from the file's settings ({err})"
        ) from None


def build_pretrained_encoder(path: str | Path, overrides: dict | None = None) -> tuple[nn.Module, dict]:
    """``(encoder, spec)``: the encoder of ``path`` built from the file's own settings, with
    ``overrides`` (e.g. dropout) on top, and its weights loaded."""
    state, spec = read_encoder_state(path)
    theirs = encoder_spec(spec)
    if theirs is None:
        raise ValueError(f"{path} does not record its encoder's settings (a bare Lightning checkpoint): "
                         "give model.init_args.encoder")
    args = {**dict(theirs.get("init_args") or {}), **dict(overrides or {})}
    encoder = build_module({"class_path": theirs["class_path"], "init_args": args})
    _load_into(encoder, state, spec, path)
    return encoder, spec
