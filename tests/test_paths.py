"""Shortest paths and path features on graphs with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem

from tmzoo.chem.molecule import mol_to_data, smiles_to_data
from tmzoo.chem.paths import UNREACHABLE, path_bond_codes, reference_path_bond_codes


def graph(smiles: str):
    data = smiles_to_data(smiles)
    return data.edge_index.numpy(), data.edge_attr.numpy(), data.num_nodes


def reference_recursive(edge_index, edge_attr, n, max_hops=5):
    """The reference algorithm written plainly: Floyd–Warshall + recursive path rebuild."""
    adj = np.zeros((n, n), dtype=bool)
    adj[edge_index[0], edge_index[1]] = True
    dist = [[0 if i == j else (1 if adj[i, j] else UNREACHABLE) for j in range(n)] for i in range(n)]
    via = [[0] * n for _ in range(n)]
    for k in range(n):
        for i in range(n):
            for j in range(n):
                if dist[i][j] > dist[i][k] + dist[k][j]:
                    dist[i][j] = dist[i][k] + dist[k][j]
                    via[i][j] = k
    feat = np.zeros((n, n, 3), dtype=np.int64)  # 0 = not bonded
    feat[edge_index[0], edge_index[1]] = edge_attr + 1

    def rebuild(i, j):
        k = via[i][j]
        return [] if k == 0 else rebuild(i, k) + [k] + rebuild(k, j)

    codes = np.zeros((n, n, max_hops, 3), dtype=np.int64)
    for i in range(n):
        for j in range(n):
            if i == j or dist[i][j] >= UNREACHABLE:
                continue
            nodes = [i] + rebuild(i, j) + [j]
            for t in range(min(len(nodes) - 1, max_hops)):
                codes[i, j, t] = feat[nodes[t], nodes[t + 1]] + 1
    return np.minimum(np.array(dist), UNREACHABLE), codes


def test_chain_distances_and_hops():
    dist, codes = path_bond_codes(*graph("CCCCCCC"))  # heptane: a path of 7 atoms
    expected = np.abs(np.arange(7)[:, None] - np.arange(7)[None, :])
    np.testing.assert_array_equal(dist, expected)
    hops = (codes != 0).all(-1).sum(-1)
    np.testing.assert_array_equal(hops, np.minimum(expected, 5))
    # single bonds: bond type 0 -> code 2, stereo 0 -> 2, not conjugated 0 -> 2
    assert (codes[0, 6, :5] == 2).all()


def test_ring_distances():
    dist, _ = path_bond_codes(*graph("C1CCCCC1"))
    i = np.arange(6)
    ring = np.minimum(np.abs(i[:, None] - i[None, :]), 6 - np.abs(i[:, None] - i[None, :]))
    np.testing.assert_array_equal(dist, ring)


def test_benzene_hops_are_aromatic_bonds():
    _, codes = path_bond_codes(*graph("c1ccccc1"))
    # aromatic bond type 3 -> code 5, conjugated 1 -> code 3
    assert (codes[0, 3, :3] == [5, 2, 3]).all()
    assert (codes[0, 3, 3:] == 0).all()


def test_branched_molecule():
    # isobutane: central carbon 1 bonded to 0, 2, 3
    dist, codes = path_bond_codes(*graph("CC(C)C"))
    np.testing.assert_array_equal(dist, [[0, 1, 2, 2], [1, 0, 1, 1], [2, 1, 0, 2], [2, 1, 2, 0]])
    assert (codes[0, 2, :2] != 0).all() and (codes[0, 2, 2:] == 0).all()


def test_disconnected_salt():
    dist, codes = path_bond_codes(*graph("[Na+].[Cl-]"))
    np.testing.assert_array_equal(dist, [[0, UNREACHABLE], [UNREACHABLE, 0]])
    assert (codes == 0).all()
    dist, _ = path_bond_codes(*graph("CC(=O)[O-].[NH4+]"))
    assert (dist[:4, 4] == UNREACHABLE).all() and dist[0, 3] == 2


def test_single_atom():
    dist, codes = path_bond_codes(*graph("C"))
    assert dist.shape == (1, 1) and dist[0, 0] == 0 and codes.shape == (1, 1, 5, 3) and (codes == 0).all()
    dist, codes = reference_path_bond_codes(*graph("[Cu]"))
    assert dist[0, 0] == 0 and (codes == 0).all()


def test_correct_paths_follow_bonds():
    edge_index, edge_attr, n = graph("CC(=O)Nc1ccc(O)cc1")
    dist, codes = path_bond_codes(edge_index, edge_attr, n)
    bonded = {(int(a), int(b)) for a, b in edge_index.T}
    assert (codes[dist > 0] != 1).all(), "a true shortest path never has a non-bond hop"
    assert ((codes != 0).all(-1).sum(-1) == np.minimum(dist, 5)).all()
    assert len(bonded) == edge_index.shape[1]


@pytest.mark.parametrize(
    "smiles", ["Oc1ccccc1", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "OC1CCC(CC1)C(=O)O", "C1CC2CCC1C2", "[Na+].[O-]c1ccccc1", "CCCCCCCCCC"]
)
def test_reference_mode_matches_recursive_reference(smiles):
    edge_index, edge_attr, n = graph(smiles)
    dist, codes = reference_path_bond_codes(edge_index, edge_attr, n)
    ref_dist, ref_codes = reference_recursive(edge_index, edge_attr, n)
    np.testing.assert_array_equal(dist, ref_dist)
    np.testing.assert_array_equal(codes, ref_codes)


def test_reference_quirk_collapses_paths_through_atom_0():
    # phenol written with atom 0 inside the ring: 1 -> 0 -> 5 is the only 2-bond path 1..5
    mol = Chem.MolFromSmiles("c1(O)ccccc1")
    data = mol_to_data(mol)
    edge_index, edge_attr, n = data.edge_index.numpy(), data.edge_attr.numpy(), data.num_nodes
    dist, correct = path_bond_codes(edge_index, edge_attr, n)
    _, quirk = reference_path_bond_codes(edge_index, edge_attr, n)
    i, j = 2, 6  # ring neighbours of atom 0
    assert dist[i, j] == 2
    assert (correct[i, j, :2] >= 2).all()
    assert (quirk[i, j, 0] == 1).all() and (quirk[i, j, 1:] == 0).all()
