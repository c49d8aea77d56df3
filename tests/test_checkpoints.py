"""Released checkpoints load safely, convert losslessly, and mismatches fail loudly."""

from __future__ import annotations

import pickle

import pytest
import torch
from rdkit import Chem

from conftest import featurize
from tmzoo.checkpoints import UnsafeCheckpointError, convert_checkpoint, load_bundle, safe_load
from tmzoo.checkpoints.bundle import build_module, load_state_strict
from tmzoo.checkpoints.official import convert_official


@pytest.fixture(scope="module")
def official(parity_dir):
    return parity_dir / "golden_shared_official_format.pt"


def test_official_file_is_not_weights_only_loadable(official):
    with pytest.raises(pickle.UnpicklingError):
        torch.load(official, weights_only=True)


def test_architecture_is_inferred_from_weights(official):
    spec, state = convert_official(safe_load(official))
    enc = spec["modules"]["encoder"]["init_args"]
    assert (enc["num_layers"], enc["embed_dim"], enc["ffn_dim"], enc["num_heads"], enc["num_kernels"]) == (2, 32, 48, 4, 16)
    assert enc["use_3d"] and enc["reference_compatible"]
    assert set(spec["modules"]) == {"encoder", "gap_head", "denoising_head"}
    assert len(state) == len(safe_load(official)["model"])


def test_convert_round_trip(official, parity_dir, tmp_path):
    target = tmp_path / "model.ckpt"
    convert_checkpoint(official, target)
    plain = torch.load(target, weights_only=True)  # a tmzoo checkpoint is plain data
    assert plain["tmzoo"]["task"] == "pretraining"
    batch = featurize(list(Chem.SDMolSupplier(str(parity_dir / "golden_shared.sdf"))), reference_compatible=True)
    a, b = load_bundle(official), load_bundle(target)
    with torch.no_grad():
        assert torch.equal(a.predict(batch), b.predict(batch))


def test_unmatched_and_missing_keys_fail(official):
    spec, state = convert_official(safe_load(official))
    modules = {name: build_module(s) for name, s in spec["modules"].items()}
    extra = dict(state, **{"encoder.unknown.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="unexpected"):
        load_state_strict(modules, extra)
    missing = {k: v for k, v in state.items() if not k.startswith("encoder.layers.1.fc1")}
    with pytest.raises(ValueError, match="missing"):
        load_state_strict(modules, missing)
    checkpoint = safe_load(official)
    checkpoint["model"]["encoder.molecule_encoder.strange_key"] = torch.zeros(1)
    spec, state = convert_official(checkpoint)
    with pytest.raises(ValueError, match="strange_key"):
        load_state_strict(modules, state)
    checkpoint["model"]["decoder.other"] = torch.zeros(1)
    with pytest.raises(ValueError, match="decoder.other"):
        convert_official(checkpoint)


def test_shape_mismatch_names_the_tensor(official):
    spec, state = convert_official(safe_load(official))
    modules = {name: build_module(s) for name, s in spec["modules"].items()}
    state["encoder.layers.0.fc1.weight"] = torch.zeros(7, 32)
    with pytest.raises(ValueError, match=r"encoder\.layers\.0\.fc1\.weight"):
        load_state_strict(modules, state)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "extra_state": _Payload(marker)}, path)
    with pytest.raises(UnsafeCheckpointError, match="system"):
        safe_load(path)
    with pytest.raises(UnsafeCheckpointError):
        load_bundle(path)
    assert not marker.exists()


def test_spec_may_only_name_tmzoo_classes(tmp_path):
    path = tmp_path / "spec.ckpt"
    torch.save({"state_dict": {}, "tmzoo": {"modules": {"encoder": {"class_path": "os.system", "init_args": {}}}}}, path)
    with pytest.raises(ValueError, match="only tmzoo classes"):
        load_bundle(path)


def test_module_configs_are_their_init_arguments():
    """What a checkpoint records of a module is its constructor's arguments, all of them."""
    import inspect

    from tmzoo.models import DenoisingHead, GapHead, GraphRegressionHead, TransformerM
    from tmzoo.models.baselines import GINVirtualNode, SchNetEncoder

    modules = [TransformerM(num_layers=1, embed_dim=8, ffn_dim=8, num_heads=2, num_kernels=4), GapHead(8),
               DenoisingHead(8, 2), GraphRegressionHead(8, 3, readout="mean"), GINVirtualNode(1, 8), SchNetEncoder(8)]
    for module in modules:
        signature = inspect.signature(type(module).__init__)
        assert list(module.config) == [p for p in signature.parameters if p != "self"], type(module)
        rebuilt = type(module)(**module.config)
        assert rebuilt.config == module.config
    assert modules[3].config == {"embed_dim": 8, "num_targets": 3, "readout": "mean"}
