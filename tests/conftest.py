"""Shared fixtures: repository test data and small featurised molecules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from rdkit import Chem
from rdkit.Chem import AllChem
from torch_geometric.data import Batch

from tmzoo.chem.molecule import mol_to_data
from tmzoo.data.transforms import transformer_m_transform

FIXTURES = Path(__file__).parent / "fixtures"
PARITY = FIXTURES / "parity"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: on a shared 2-core machine thread hand-offs cost more than they save."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return PARITY


def embedded(smiles: str, seed: int = 0) -> Chem.Mol:
    """Heavy-atom molecule with one seeded ETKDG conformer."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    return Chem.RemoveHs(mol)


def featurize(mols, reference_compatible: bool = False, use_coordinates: bool = True) -> Batch:
    transform = transformer_m_transform(reference_compatible=reference_compatible)
    return Batch.from_data_list([transform(mol_to_data(m, use_coordinates=use_coordinates)) for m in mols])


def tiny_pretraining_bundle() -> tuple[dict, dict]:
    """``(spec, state_dict)`` of a one-layer Transformer-M with a gap head (random weights)."""
    from tmzoo.checkpoints.bundle import module_spec
    from tmzoo.models import GapHead, TransformerM

    encoder = TransformerM(num_layers=1, embed_dim=8, ffn_dim=8, num_heads=2, num_kernels=4)
    head = GapHead(8)
    spec = {
        "format": 1,
        "task": "pretraining",
        "modules": {"encoder": module_spec(encoder), "gap_head": module_spec(head)},
        "featurization": {"max_hops": 5, "reference_compatible": False},
    }
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"gap_head.{k}": v for k, v in head.state_dict().items()})
    return spec, state


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """A tiny released-shape pretraining checkpoint (random weights, seed 0), saved once."""
    from tmzoo.checkpoints import save_bundle

    torch.manual_seed(0)
    spec, state = tiny_pretraining_bundle()
    path = tmp_path_factory.mktemp("ckpt") / "tiny.ckpt"
    save_bundle(spec, state, path)
    return str(path)
