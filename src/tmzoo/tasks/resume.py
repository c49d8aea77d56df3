"""Exact mid-epoch resume: a training loader that Lightning can checkpoint, and RNG state.

Lightning restores a loader's position only when the loader has ``state_dict`` /
``load_state_dict`` (otherwise a resumed epoch starts a new shuffle). :class:`ResumableDataLoader`
shuffles with its own generator seeded by ``(seed, epoch)`` and records how many batches the
training step has consumed, so a run resumed from a mid-epoch checkpoint sees exactly the
batches the uninterrupted run would have seen. The tasks save and restore the global RNG
states (mode dropout, coordinate noise, dropout) in the checkpoint.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from tmzoo.data.resumable import ResumableDataLoader  # noqa: F401  (re-exported)


def rng_states() -> dict:
    """Global RNG states (torch CPU and CUDA, numpy, python) as checkpoint-friendly data."""
    np_state = np.random.get_state()
    cuda = {"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}
    return {
        **cuda,
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])},
        "python": repr(random.getstate()),
    }


def set_rng_states(states: dict) -> None:
    """Restore what :func:`rng_states` saved (entries that are missing are skipped)."""
    if "torch" in states:
        torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    if "numpy" in states:
        key = states["numpy"]["key"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", key, int(states["numpy"]["pos"]), 0, 0.0))
    if "python" in states:
        import ast

        random.setstate(ast.literal_eval(states["python"]))
