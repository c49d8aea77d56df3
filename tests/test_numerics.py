"""No NaN or inf in forward or backward for degenerate geometry and awkward batches.

Covers coincident atoms, atoms 1e4 Å (and 1e6 Å) apart, a single atom, a batch mixing
molecules with and without coordinates, a padded batch (one atom beside thirty), every
mode, train and eval, and bf16 autocast on CPU (where the Gaussian basis must stay fp32).
"""

from __future__ import annotations

import pytest
import torch
from rdkit import Chem
from rdkit.Geometry import Point3D
from torch_geometric.data import Batch

from tmzoo.chem.molecule import mol_to_data, smiles_to_data
from tmzoo.data.transforms import transformer_m_transform
from tmzoo.models import DenoisingHead, GapHead, GraphRegressionHead, TransformerM, geometry
from tmzoo.models.geometry import GaussianPairBasis, Geometry3DBias

TRANSFORM = transformer_m_transform()


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest)."""


def with_coordinates(smiles: str, positions):
    mol = Chem.MolFromSmiles(smiles)
    conf = Chem.Conformer(mol.GetNumAtoms())
    for i, p in enumerate(positions):
        conf.SetAtomPosition(i, Point3D(*map(float, p)))
    conf.Set3D(True)
    mol.AddConformer(conf, assignId=True)
    return TRANSFORM(mol_to_data(mol))


def without_coordinates(smiles: str):
    return TRANSFORM(smiles_to_data(smiles))


def zigzag(n: int):
    return [(1.5 * i, 0.8 * (i % 2), 0.1 * i) for i in range(n)]


CASES = {
    "coincident": lambda: [with_coordinates("CCO", [(1, 1, 1)] * 3)],
    "coincident_pair_in_ring": lambda: [
        with_coordinates("c1ccccc1", [(0, 0, 0), (0, 0, 0), (1.4, 0, 0), (2.1, 1.2, 0), (1.4, 2.4, 0), (0, 2.4, 0)])
    ],
    "far_1e4": lambda: [
        with_coordinates("C.O", [(0, 0, 0), (1e4, 1e4, 1e4)]),
        with_coordinates("CC", [(0, 0, 0), (1e4, 0, 0)]),
    ],
    "far_1e6": lambda: [with_coordinates("CO", [(-1e6, 0, 0), (1e6, 0, 0)])],
    "single_atom_3d": lambda: [with_coordinates("C", [(0, 0, 0)])],
    "single_atom_2d": lambda: [without_coordinates("[Na+]")],
    "mixed_coordinates": lambda: [
        with_coordinates("CCO", [(0, 0, 0), (1.5, 0, 0), (2.1, 1.2, 0)]),
        without_coordinates("c1ccccc1"),
        with_coordinates("[Na+].[Cl-]", [(0, 0, 0), (2.8, 0, 0)]),
        without_coordinates("O"),
    ],
    "padded_row": lambda: [with_coordinates("C", [(0, 0, 0)]), with_coordinates("C" * 30, zigzag(30))],
    "padded_row_2d": lambda: [without_coordinates("C"), without_coordinates("C" * 30)],
}


def make_model(seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    args = dict(num_layers=2, embed_dim=16, ffn_dim=16, num_heads=4, num_kernels=8, droppath=0.1)
    args.update(kwargs)
    encoder = TransformerM(**args)
    heads = torch.nn.ModuleDict(
        {"gap": GapHead(16), "noise": DenoisingHead(16, 4), "mean": GraphRegressionHead(16, 3, readout="mean")}
    )
    return encoder, heads


def run(encoder, heads, batch, modes):
    out = encoder(batch, modes)
    preds = {"gap": heads["gap"](out), "noise": heads["noise"](out), "mean": heads["mean"](out)}
    return out, preds


def assert_all_finite(out, preds, modules):
    assert torch.isfinite(out.tokens.float()).all()
    for name, value in preds.items():
        assert torch.isfinite(value.float()).all(), name
    loss = sum(v.float().sum() for v in preds.values())
    loss.backward()
    for module in modules:
        for name, p in module.named_parameters():
            if p.grad is not None:
                assert torch.isfinite(p.grad).all(), f"non-finite gradient in {name}"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("modes", ["default", "every_mode"])
@pytest.mark.parametrize("train", [False, True], ids=["eval", "train"])
def test_forward_and_backward_are_finite(case, modes, train):
    encoder, heads = make_model()
    encoder.train(train)
    heads.train(train)
    molecules = CASES[case]()
    m = None
    if modes == "every_mode":  # the case three times over, read as 2D+3D, 2D and 3D
        m = torch.arange(3).repeat_interleave(len(molecules))
        molecules = molecules * 3
    batch = Batch.from_data_list(molecules)
    batch.pos.requires_grad_(True)  # forces through the geometry, e.g. at zero distance
    out, preds = run(encoder, heads, batch, m)
    assert_all_finite(out, preds, [encoder, heads])
    if batch.pos.grad is not None:
        assert torch.isfinite(batch.pos.grad).all()


@pytest.mark.parametrize("recompute", [True, False])
def test_recomputed_3d_basis_has_finite_gradients(recompute):
    encoder, heads = make_model(recompute_3d=recompute)
    encoder.train()
    batch = Batch.from_data_list(CASES["coincident"]() + CASES["far_1e4"]() + CASES["padded_row"]())
    out, preds = run(encoder, heads, batch, torch.zeros(batch.num_graphs, dtype=torch.long))
    assert_all_finite(out, preds, [encoder, heads])


@pytest.mark.parametrize("case", list(CASES))
def test_bf16_autocast_is_finite_and_keeps_the_basis_fp32(case, monkeypatch):
    encoder, heads = make_model()
    encoder.train()
    heads.train()
    seen = []
    basis = geometry.gaussians
    monkeypatch.setattr(geometry, "gaussians", lambda *args: seen.append(out := basis(*args)) or out)
    batch = Batch.from_data_list(CASES[case]())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, preds = run(encoder, heads, batch, None)
        assert_all_finite(out, preds, [encoder, heads])
    seen = [t.dtype for t in seen]
    if bool(batch.has_pos.any()):
        assert seen and all(d == torch.float32 for d in seen)


def test_gaussian_basis_is_fp32_under_autocast_and_matches_eager():
    torch.manual_seed(0)
    basis = GaussianPairBasis(num_kernels=16)
    torch.nn.init.uniform_(basis.means.weight, 0, 3)
    torch.nn.init.uniform_(basis.stds.weight, 0, 3)
    dist = torch.tensor([[[0.0, 1e-6, 1.0], [1.5, 1e4, 1e6], [3.0, 0.5, 2.0]]]).to(torch.bfloat16)
    pair_type = torch.randint(1, 1536, (1, 3, 3, 2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = basis(dist, pair_type)
    eager = basis(dist.float(), pair_type)
    assert under.dtype == torch.float32
    assert torch.isfinite(under).all()
    torch.testing.assert_close(under, eager, rtol=0, atol=0)


def test_padding_does_not_change_a_small_molecule():
    """One atom alone and the same atom beside a 30-atom molecule give the same output."""
    encoder, heads = make_model()
    encoder.eval()
    heads.eval()
    small, big = CASES["padded_row"]()
    with torch.no_grad():
        alone, alone_preds = run(encoder, heads, Batch.from_data_list([small]), None)
        together, together_preds = run(encoder, heads, Batch.from_data_list([small, big]), None)
    torch.testing.assert_close(together.tokens[0, :2], alone.tokens[0, :2], rtol=1e-5, atol=1e-5)
    for name in alone_preds:
        torch.testing.assert_close(together_preds[name][:1, : alone_preds[name].shape[1]], alone_preds[name],
                                   rtol=1e-5, atol=1e-5)


def test_coordinates_of_2d_molecules_cannot_leak_into_a_mixed_batch():
    """A 2D-only molecule gives the same output alone and beside 3D molecules."""
    encoder, heads = make_model()
    encoder.eval()
    flat = without_coordinates("c1ccccc1")
    with torch.no_grad():
        alone = encoder(Batch.from_data_list([flat])).graph
        mixed = encoder(Batch.from_data_list([CASES["far_1e4"]()[0], flat, CASES["coincident"]()[0]])).graph
    torch.testing.assert_close(mixed[1], alone[0], rtol=1e-5, atol=1e-5)


def test_fused_3d_gradients_under_bf16_autocast_match_autograd():
    """The hand-written backward (taken in fp32) agrees with autograd through the bf16 projection."""
    from tmzoo.data.dense import to_dense

    torch.manual_seed(0)
    mol = to_dense(Batch.from_data_list(CASES["padded_row"]()))
    grads = []
    for recompute in (True, False):
        torch.manual_seed(1)
        module = Geometry3DBias(16, 4, num_kernels=8, recompute=recompute)
        torch.nn.init.uniform_(module.gbf.means.weight, 0, 3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bias, atoms, _ = module(mol)
            loss = torch.where(torch.isinf(bias), 0, bias).float().pow(2).sum() + atoms.float().pow(2).sum()
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=5e-2, atol=5e-2 * grads[1][name].abs().max().item(), msg=name)


@pytest.mark.parametrize("modes", [None, torch.tensor([0, 1, 2, 0])])
def test_graph_only_last_layer_gives_the_full_graph_token(modes):
    """``graph_only`` skips the atoms in the last layer: the graph token is unchanged, in fp32
    and under bf16 autocast, and the gap prediction of ``Pretraining`` uses it."""
    from tmzoo.tasks import Pretraining

    encoder, _ = make_model(num_layers=3)
    encoder.eval()
    batch = Batch.from_data_list(CASES["mixed_coordinates"]())
    with torch.no_grad():
        full, part = encoder(batch, modes), encoder(batch, modes, graph_only=True)
        assert part.tokens.shape == (4, 1, 16)
        torch.testing.assert_close(part.graph, full.graph, rtol=1e-6, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(encoder(batch, modes, graph_only=True).graph, encoder(batch, modes).graph,
                                       rtol=0.02, atol=0.02)
        task = Pretraining(encoder=encoder, gap_head=GapHead).eval()
        calls = []
        encoder.register_forward_hook(lambda module, args, kwargs, out: calls.append(kwargs), with_kwargs=True)
        torch.testing.assert_close(task(batch), task.gap_head(encoder(batch)), rtol=1e-6, atol=1e-6)
    assert calls[0] == {"graph_only": True}


def test_heads_that_read_atoms_get_every_token():
    """A gap head pooling the atoms (``readout="mean"``) is not given a graph-token-only output,
    and such an output refuses ``atoms`` instead of handing over an empty tensor."""
    from functools import partial

    from tmzoo.tasks import Pretraining

    encoder, _ = make_model(num_layers=2)
    task = Pretraining(encoder=encoder, gap_head=partial(GraphRegressionHead, num_targets=1, readout="mean")).eval()
    batch = Batch.from_data_list(CASES["mixed_coordinates"]())
    with torch.no_grad():
        torch.testing.assert_close(task(batch), task.gap_head(encoder(batch)), rtol=1e-6, atol=1e-6)
        with pytest.raises(ValueError, match="graph token only"):
            encoder(batch, graph_only=True).atoms
