"""Checkpoints: safe reading, released Transformer-M files, and tmzoo's own format."""

from tmzoo.checkpoints.bundle import ModelBundle, convert_checkpoint, load_bundle, save_bundle
from tmzoo.checkpoints.safe_pickle import UnsafeCheckpointError, safe_load

__all__ = ["ModelBundle", "UnsafeCheckpointError", "convert_checkpoint", "load_bundle", "safe_load", "save_bundle"]
