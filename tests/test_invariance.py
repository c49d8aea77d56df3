"""Graph predictions are invariant to atom order (all modes) and to rigid motions (3D modes)."""

from __future__ import annotations


import pytest
import torch
from rdkit import Chem

from conftest import embedded, featurize
from tmzoo.models import GapHead, Mode, TransformerM

SMILES = ["CC(=O)Nc1ccc(O)cc1", "OC(=O)CCl", "C1CC1C#N", "CCN(CC)CCO"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    encoder = TransformerM(num_layers=2, embed_dim=32, ffn_dim=48, num_heads=4, num_kernels=16)
    # perturb so that no parameter is trivially zero or one (padding rows stay zero)
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            p.add_(0.05 * torch.randn_like(p))
    return encoder.eval(), GapHead(32).eval()


@pytest.fixture(scope="module")
def mols():
    return [embedded(s, seed=i) for i, s in enumerate(SMILES)]


def predict(model, mols, mode):
    encoder, head = model
    batch = featurize(mols)
    with torch.no_grad():
        return head(encoder(batch, torch.full((len(mols),), int(mode))))


def permuted(mol, seed):
    order = torch.randperm(mol.GetNumAtoms(), generator=torch.Generator().manual_seed(seed)).tolist()
    return Chem.RenumberAtoms(mol, order)


def rotation(seed):
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q * torch.sign(torch.det(q))


def moved(mol, seed):
    copy = Chem.Mol(mol)
    conf = copy.GetConformer()
    pos = torch.tensor(conf.GetPositions())
    new = pos @ rotation(seed).T + torch.tensor([3.0, -7.5, 11.0])
    for i, p in enumerate(new.tolist()):
        conf.SetAtomPosition(i, p)
    return copy


@pytest.mark.parametrize("mode", [Mode.BOTH, Mode.ONLY_2D, Mode.ONLY_3D])
def test_atom_permutation(model, mols, mode):
    before = predict(model, mols, mode)
    after = predict(model, [permuted(m, i) for i, m in enumerate(mols)], mode)
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()


@pytest.mark.parametrize("mode", [Mode.BOTH, Mode.ONLY_3D])
def test_rotation_and_translation(model, mols, mode):
    before = predict(model, mols, mode)
    after = predict(model, [moved(m, 10 + i) for i, m in enumerate(mols)], mode)
    assert torch.allclose(before, after, atol=1e-5), (before - after).abs().max()


def test_3d_channel_sees_geometry(model, mols):
    """A non-rigid change of coordinates must change the 3D prediction (the test above can fail)."""
    stretched = []
    for m in mols:
        copy = Chem.Mol(m)
        conf = copy.GetConformer()
        for i in range(copy.GetNumAtoms()):
            p = conf.GetAtomPosition(i)
            conf.SetAtomPosition(i, (p.x * 1.5, p.y, p.z))
        stretched.append(copy)
    assert not torch.allclose(predict(model, mols, Mode.ONLY_3D), predict(model, stretched, Mode.ONLY_3D), atol=1e-4)
