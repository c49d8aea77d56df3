"""Transforms add the right per-molecule quantities; dense batching round-trips them."""

from __future__ import annotations

import torch
from rdkit import Chem
from torch_geometric.data import Batch

from tmzoo.chem.molecule import mol_to_data, smiles_to_data
from tmzoo.data.dense import to_dense
from tmzoo.data.transforms import AddDegree, AddShortestPaths, transformer_m_transform
from tmzoo.models.geometry import pair_type_rows


def test_repr_shows_arguments():
    assert repr(AddShortestPaths(4, True)) == "AddShortestPaths(max_hops=4, reference_compatible=True)"
    assert "reference_compatible=False" in repr(transformer_m_transform())
    assert repr(transformer_m_transform()) != repr(transformer_m_transform(reference_compatible=True))


def test_degree_and_pair_types():
    data = AddDegree()(smiles_to_data("CC(C)O"))
    assert data.degree.tolist() == [1, 3, 1, 1]
    x = torch.cat([data.x, torch.zeros(1, 9, dtype=torch.long)])[None]  # one padded atom
    mask = torch.tensor([[True] * 4 + [False]])
    pairs = pair_type_rows(x, mask)[0]
    assert pairs[0, 1].tolist() == [8, 520]  # carbon-carbon
    assert pairs[4, 0].tolist() == pairs[0, 4].tolist() == [1, 513]  # a padded atom: padding rows
    assert pairs[0, 3].tolist() == [8, 522]  # carbon-oxygen
    assert pairs[3, 0].tolist() == [10, 520]


def test_ogb_features_and_coordinates(parity_dir):
    mols = list(Chem.SDMolSupplier(str(parity_dir / "golden_shared.sdf")))
    data = mol_to_data(mols[0])
    assert data.x.shape == (3, 9) and data.edge_index.shape == (2, 4) and data.edge_attr.shape == (4, 3)
    assert bool(data.has_pos) and data.pos.abs().sum() > 0
    assert data.x[:, 0].tolist() == [5, 5, 7]  # Z - 1 for C, C, O
    assert not bool(mol_to_data(mols[0], use_coordinates=False).has_pos)
    assert not bool(smiles_to_data("CCO").has_pos)


def test_dense_batch_round_trip():
    transform = transformer_m_transform()
    graphs = [transform(smiles_to_data(s)) for s in ("CCO", "c1ccccc1O", "[Na+].[Cl-]", "C")]
    dense = to_dense(Batch.from_data_list(graphs))
    assert dense.x.shape == (4, 7, 9)
    assert dense.mask.sum(1).tolist() == [3, 7, 2, 1]
    for b, g in enumerate(graphs):
        n = g.num_nodes
        assert torch.equal(dense.spd[b, :n, :n], g.pair_spd.view(n, n).long())
        assert torch.equal(dense.path[b, :n, :n], g.pair_path.view(n, n, 5, 3))
        assert (dense.spd[b, n:] == -1).all() and (dense.spd[b, :, n:] == -1).all()
        assert (dense.pair_type[b, n:, :] == torch.tensor([1, 513])).all()
