"""tmzoo reproduces the reference Transformer-M outputs from a released-format checkpoint."""

from __future__ import annotations

import pytest
import torch
from rdkit import Chem

from conftest import featurize
from tmzoo.checkpoints import load_bundle
from tmzoo.data.dense import to_dense
from tmzoo.models import DenoisingHead, GapHead, Mode, TransformerM
from tmzoo.models.geometry import pair_type_rows

TOL = 1e-5


@pytest.fixture(scope="module")
def golden(parity_dir):
    return torch.load(parity_dir / "golden_outputs.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(parity_dir):
    return load_bundle(parity_dir / "golden_shared_official_format.pt")


@pytest.fixture(scope="module")
def batch(parity_dir):
    mols = list(Chem.SDMolSupplier(str(parity_dir / "golden_shared.sdf")))
    return featurize(mols, reference_compatible=True)


def test_featurisation_matches_reference_batch(golden, batch):
    ref, dense = golden["batch"], to_dense(batch)
    offsets = torch.arange(9) * 512 + 2
    assert torch.equal(torch.where(dense.mask[..., None], dense.x + offsets, 0), ref["x"])
    assert torch.equal(torch.where(dense.mask, dense.degree + 1, 0), ref["in_degree"])
    assert torch.equal(dense.spd.long() + 1, ref["spatial_pos"])
    path = dense.path.long()
    rows = torch.where(path >= 2, path + torch.arange(3) * 512 + 1, path)
    assert torch.equal(rows, ref["edge_input"])
    assert torch.equal(pair_type_rows(dense.x, dense.mask), ref["node_type_edge"])
    assert torch.equal(dense.pos, ref["pos"])


def _outputs(model, batch, modes):
    with torch.no_grad():
        out = model.encoder(batch, torch.as_tensor(modes))
        return out, model.model.gap_head(out), model.model.denoising_head(out)


def test_eval_outputs_in_three_modes(model, batch, golden):
    b = batch.num_graphs
    out, graph, noise = _outputs(model, batch, [Mode.BOTH] * b)
    nodes = model.model.gap_head.per_token(out.atoms)
    assert (graph - golden["eval_2d3d_graph"]).abs().max() <= TOL
    assert (nodes - golden["eval_2d3d_nodes"]).abs().max() <= TOL
    assert (noise - golden["eval_2d3d_noise"]).abs().max() <= TOL
    _, graph_2d, _ = _outputs(model, batch, [Mode.ONLY_2D] * b)
    assert (graph_2d - golden["eval_2d_graph"]).abs().max() <= TOL
    _, graph_3d, noise_3d = _outputs(model, batch, [Mode.ONLY_3D] * b)
    assert (graph_3d - golden["eval_3d_graph"]).abs().max() <= TOL
    assert (noise_3d - golden["eval_3d_noise"]).abs().max() <= TOL
    # the three modes really differ, so the comparison above can fail
    assert (graph - graph_2d).abs().max() > 1e-4 and (graph - graph_3d).abs().max() > 1e-4


def test_forced_mode_training_pass(model, batch, golden):
    modes = golden["train_modes"]
    out, graph, noise = _outputs(model, batch, modes)
    noise = noise * (out.modes == Mode.ONLY_3D)[:, None, None]
    assert (graph - golden["train_graph"]).abs().max() <= TOL
    assert (noise - golden["train_noise"]).abs().max() <= TOL


def test_parameter_counts(model, golden):
    assert sum(p.numel() for p in model.parameters()) == golden["n_params"]


@pytest.mark.parametrize("layers,expected", [(12, 49_574_628), (18, 70_854_372)])
def test_released_model_sizes(layers, expected):
    encoder = TransformerM(num_layers=layers, embed_dim=768, ffn_dim=768, num_heads=32, num_kernels=128)
    heads = [GapHead(768), DenoisingHead(768, 32)]
    total = sum(p.numel() for m in [encoder, *heads] for p in m.parameters())
    assert total == expected
