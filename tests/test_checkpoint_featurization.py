"""The featurisation and evaluation mode a tmzoo checkpoint records (spec ``featurization``,
``eval_mode``), as ``ModelBundle`` exposes them."""

from __future__ import annotations

import inspect

import pytest
import torch

from conftest import tiny_pretraining_bundle
from tmzoo.checkpoints import load_bundle, save_bundle
from tmzoo.data.transforms import transformer_m_transform


def _bundle(tmp_path, **spec_changes):
    spec, state = tiny_pretraining_bundle()
    spec.update(spec_changes)
    path = tmp_path / "model.ckpt"
    save_bundle(spec, state, path)
    return load_bundle(path)


def test_recorded_featurization_and_eval_mode(tmp_path):
    bundle = _bundle(tmp_path, featurization={"max_hops": 3, "reference_compatible": True, "hydrogens": True}, eval_mode="2d")
    assert bundle.featurization == {"max_hops": 3, "reference_compatible": True, "hydrogens": True}
    assert bundle.eval_mode == "2d"
    expected = {k: v for k, v in bundle.featurization.items() if k in inspect.signature(transformer_m_transform).parameters}
    assert bundle.transform_args == expected and {"max_hops", "reference_compatible"} <= set(expected)
    transformer_m_transform(**bundle.transform_args)


def test_defaults_when_not_recorded(tmp_path):
    spec, _ = tiny_pretraining_bundle()
    spec.pop("featurization")
    bundle = _bundle(tmp_path, **spec)
    assert bundle.featurization == {"max_hops": 5, "reference_compatible": False, "hydrogens": False}
    assert bundle.eval_mode is None


def test_released_file_records_heavy_atoms(parity_dir):
    bundle = load_bundle(parity_dir / "golden_shared_official_format.pt")
    assert bundle.featurization == {"max_hops": 5, "reference_compatible": True, "hydrogens": False}
    assert bundle.eval_mode is None


@pytest.mark.parametrize(
    "change",
    [
        {"featurization": {"hydrogens": "yes"}},
        {"featurization": {"hydrogens": 1}},
        {"featurization": {"max_hops": True}},
        {"eval_mode": "4d"},
        {"eval_mode": 2},
        {"eval_mode": ["2d"]},
    ],
    ids=["hydrogens-str", "hydrogens-int", "max_hops-bool", "eval_mode-4d", "eval_mode-int", "eval_mode-list"],
)
def test_malformed_featurization_or_eval_mode_is_a_value_error(tmp_path, change):
    spec, state = tiny_pretraining_bundle()
    spec.update(change)
    path = tmp_path / "bad.ckpt"
    torch.save({"state_dict": state, "tmzoo": spec}, path)
    with pytest.raises(ValueError, match="featurization|eval_mode"):
        load_bundle(path)
