"""The benchmark's baselines compute what tmzoo computes (values only, never timings)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import baselines  # noqa: E402
from fast_paths import fast_path_bond_codes_many  # noqa: E402

from tmzoo.chem.molecule import mol_to_data, smiles_to_data  # noqa: E402
from tmzoo.chem.paths import path_bond_codes, reference_path_bond_codes  # noqa: E402

SMILES = [
    "Oc1ccccc1",  # phenol: atom 0 outside the ring
    "CC(=O)Nc1ccc(O)cc1",  # paracetamol
    "c1ccc2c(c1)ccc1ccccc12",  # fused rings, many equal shortest paths
    "C1CC2CCC1CC2",  # bicyclic
    "CCO.Cl",  # two fragments
    "[Na+].[Cl-]",  # no bonds
    "C",
    "CN1C=NC2=C1C(=O)N(C(=O)N2C)C",
]


def _adjacency(data) -> np.ndarray:
    adj = np.zeros((data.num_nodes, data.num_nodes), dtype=bool)
    adj[data.edge_index[0].numpy(), data.edge_index[1].numpy()] = True
    return adj


@pytest.mark.parametrize("smiles", SMILES)
def test_reference_featuriser_matches_tmzoo_reference_mode(smiles):
    data = smiles_to_data(smiles)
    n = data.num_nodes
    dist, edge_input, _, _ = baselines.shortest_path_features(data.edge_index, data.edge_attr, n)
    ref_dist, ref_codes = reference_path_bond_codes(data.edge_index.numpy(), data.edge_attr.numpy(), n, 5)
    np.testing.assert_array_equal(dist, ref_dist)
    # tmzoo stores feature + 2 (0 = no hop, 1 = non-bond); the reference's table row is v + 3 + 512 f
    rows = np.where(ref_codes >= 2, ref_codes.astype(np.int64) + np.arange(3) * 512 + 1, ref_codes)
    np.testing.assert_array_equal(baselines.edge_input_rows(edge_input, 5), rows)
    # the vectorised Floyd–Warshall is the reference's triple loop
    for got, want in zip(baselines.floyd_warshall(_adjacency(data)), baselines.floyd_warshall_python(_adjacency(data))):
        np.testing.assert_array_equal(got, want)
    # the distances are the true ones, i.e. tmzoo's default featurisation
    np.testing.assert_array_equal(dist, path_bond_codes(data.edge_index.numpy(), data.edge_attr.numpy(), n)[0])


def test_reference_pipeline_features_match_tmzoo():
    from tmzoo.data.dense import to_dense
    from tmzoo.data.transforms import transformer_m_transform
    from torch_geometric.data import Batch

    transform = transformer_m_transform(reference_compatible=True)
    for smiles in SMILES[:4]:
        item = baselines.reference_pipeline(smiles)
        mine = to_dense(Batch.from_data_list([transform(mol_to_data(Chem.MolFromSmiles(smiles)))]))
        n = item.x.shape[0]
        offsets = torch.arange(9) * 512 + 2
        assert torch.equal(item.x + 1, mine.x[0] + offsets)  # reference: v + 1 + 512 f, table row + 1
        assert torch.equal(item.in_degree, mine.degree[0])
        assert torch.equal(item.spatial_pos, mine.spd[0])
        assert torch.equal(item.node_type_edge, mine.pair_type[0, :n, :n])


def test_naive_model_matches_tmzoo():
    import train_step as ts

    cfg = ts.StepConfig(num_layers=2, embed_dim=32, ffn_dim=32, num_heads=4, num_kernels=8, batch_size=6)
    loss_diff, grad_diff, grad_max = ts.parity(cfg)
    assert loss_diff < 1e-5
    assert grad_diff <= 1e-4 * max(grad_max, 1.0)


def test_proposed_batched_paths_equal_per_molecule():
    graphs = []
    for smiles in SMILES + ["CCO", "CCN", "OCC"]:  # several molecules of one size
        data = smiles_to_data(smiles)
        graphs.append((data.edge_index.numpy(), data.edge_attr.numpy(), data.num_nodes))
    for args, (dist, codes) in zip(graphs, fast_path_bond_codes_many(graphs)):
        want_dist, want_codes = path_bond_codes(*args)
        np.testing.assert_array_equal(dist, want_dist)
        np.testing.assert_array_equal(codes, want_codes)
