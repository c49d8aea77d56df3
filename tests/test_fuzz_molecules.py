"""Property-based fuzzing of featurisation, transforms and the encoder (hypothesis).

Molecules come from three generators: random graphs built atom by atom (always valid,
rings and fragments included), mutations of real PCQM4Mv2 SMILES (valid or not), and
random strings over the SMILES alphabet. For every input, featurisation either succeeds
or raises :class:`MoleculeError` (nothing else), and a successful result satisfies:
consistent shapes; a symmetric shortest-path matrix with zero diagonal, 1 exactly on bonds,
510 exactly across fragments and the triangle inequality; path codes that walk a real
shortest path with min(SPD, 5) hops (correct mode) or at most that many (reference mode);
degrees and atomic numbers (the 3D pair types' source) that match the atoms; SPD that
follows an atom renumbering; and a small TransformerM whose outputs are finite in fp32 and
under bf16 autocast.

Runs are derandomised (fixed seed per test) and bounded (``max_examples``), so CI is
reproducible and fast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdkit import Chem
from torch_geometric.data import Batch

from tmzoo.chem.molecule import MoleculeError, mol_to_data, smiles_to_data
from tmzoo.chem.paths import NON_BOND, UNREACHABLE
from tmzoo.data.transforms import transformer_m_transform
from tmzoo.models import GapHead, TransformerM

FUZZ = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)

# A few molecules of PCQM4Mv2 (tiny20 subset): radicals, stereo, charges, rings.
REAL_SMILES = [
    "Cc1ccc([C@H]2[CH]c3cnccc3[N]C2=O)cc1",
    "COc1ccc(/C=C/N(C)C(C)=O)c(OC)c1",
    "C=CCN(/C=C/c1ccccc1C)C(C)=O",
    "COC(=O)CC[C@H]1O[C@H](OC)[C@H](O)[C@@H]1O",
    "CN[C@@H](S)N/N=C(/C)c1ccccn1",
    "NC1=CC(=O)C=C[C]1c1n[nH]c(=S)n1N",
    "CCCN1C(=O)N=C(O)[C@H]([N+](=O)[O-])[C@@H]1Cl",
    "C=C(C)[C@@H]1C[C@@H](C)[C@@H](C)c2cc(O)c(C)cc21",
    "CC1=N[N][C@@H]2[C]1C(=O)N(O)c1ncccc12",
    "C#C[C@@]1(CO)C=C[C@H](N2CCC(O)=NC2=O)C1",
    "C[C@@H](O)OC(=O)/C=C/c1ccc(O)c(O)c1",
    "[Na+].[Cl-]",
    "CC(=O)[O-].[NH4+]",
]
SMILES_ALPHABET = list("CNOSPFIcnos()[]=#@+-.123456/\\*Hl") + ["Cl", "Br", "[nH]", "[O-]", "[N+]", "[C@@H]", "%10"]

CORRECT = transformer_m_transform()
REFERENCE = transformer_m_transform(reference_compatible=True)


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_thread):
    """Tiny tensors: one intra-op thread (see conftest)."""


# ----------------------------------------------------------------- generators
ELEMENTS = [("C", 4), ("C", 4), ("N", 3), ("C", 4), ("O", 2), ("S", 2), ("F", 1), ("Cl", 1), ("B", 3), ("P", 3), ("Si", 4)]


@st.composite
def random_graph_molecules(draw, max_atoms: int = 18):
    """A valid molecule: random atoms, a random forest of bonds, extra ring bonds, fragments."""
    n = draw(st.integers(1, max_atoms))
    atoms = [draw(st.sampled_from(ELEMENTS)) for _ in range(n)]
    mol = Chem.RWMol()
    for symbol, _ in atoms:
        mol.AddAtom(Chem.Atom(symbol))
    free = [valence for _, valence in atoms]
    for j in range(1, n):
        if draw(st.integers(0, 9)) == 9:
            continue  # start a new fragment
        candidates = [i for i in range(j) if free[i] > 0]
        if not candidates or free[j] == 0:
            continue
        i = draw(st.sampled_from(candidates))
        order = Chem.BondType.DOUBLE if min(free[i], free[j]) >= 2 and draw(st.booleans()) and draw(st.booleans()) else Chem.BondType.SINGLE
        mol.AddBond(i, j, order)
        used = 2 if order == Chem.BondType.DOUBLE else 1
        free[i] -= used
        free[j] -= used
    for _ in range(draw(st.integers(0, 6))):  # ring closures
        open_atoms = [k for k in range(n) if free[k] > 0]
        if len(open_atoms) < 2:
            break
        i, j = draw(st.lists(st.sampled_from(open_atoms), min_size=2, max_size=2, unique=True))
        if mol.GetBondBetweenAtoms(i, j) is None:
            mol.AddBond(i, j, Chem.BondType.SINGLE)
            free[i] -= 1
            free[j] -= 1
    out = mol.GetMol()
    Chem.SanitizeMol(out)
    return out


@st.composite
def mutated_smiles(draw):
    """A real SMILES after a few character edits, or two of them joined as fragments."""
    smiles = draw(st.sampled_from(REAL_SMILES))
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(["delete", "insert", "swap", "join", "replace"]))
        pos = draw(st.integers(0, max(len(smiles) - 1, 0)))
        if op == "delete" and len(smiles) > 1:
            smiles = smiles[:pos] + smiles[pos + 1 :]
        elif op == "insert":
            smiles = smiles[:pos] + draw(st.sampled_from(SMILES_ALPHABET)) + smiles[pos:]
        elif op == "swap" and pos + 1 < len(smiles):
            smiles = smiles[:pos] + smiles[pos + 1] + smiles[pos] + smiles[pos + 2 :]
        elif op == "join":
            smiles = smiles + "." + draw(st.sampled_from(REAL_SMILES))
        elif op == "replace":
            smiles = smiles.replace(draw(st.sampled_from(["C", "N", "O", "c"])), draw(st.sampled_from(["N", "S", "P", "[Si]", "*"])), 1)
    return smiles


grammar_smiles = st.lists(st.sampled_from(SMILES_ALPHABET), min_size=0, max_size=30).map("".join)


# ------------------------------------------------------------------ checks
def _matrix(data, name):
    n = data.num_nodes
    value = getattr(data, name)
    return value.view(n, n, *value.shape[1:]).numpy()


def check_graph(data, mol, transform_name: str) -> None:
    n = mol.GetNumAtoms()
    e = 2 * mol.GetNumBonds()
    assert data.num_nodes == n
    assert data.x.shape == (n, 9) and data.x.dtype == torch.long
    assert data.edge_index.shape == (2, e) and data.edge_attr.shape == (e, 3)
    assert data.pos.shape == (n, 3) and data.has_pos.shape == (1,)
    assert data.pair_spd.shape == (n * n,) and data.pair_spd.dtype == torch.int16
    assert data.pair_path.shape == (n * n, 5, 3) and data.pair_path.dtype == torch.uint8
    assert data.degree.shape == (n,)

    spd = _matrix(data, "pair_spd").astype(np.int64)
    adj = np.zeros((n, n), dtype=bool)
    adj[data.edge_index[0].numpy(), data.edge_index[1].numpy()] = True
    assert (spd == spd.T).all()
    assert (np.diag(spd) == 0).all()
    off = ~np.eye(n, dtype=bool)
    assert (spd[off] >= 1).all()
    assert ((spd == 1) == adj).all()
    # 510 exactly between fragments
    fragment = np.empty(n, dtype=np.int64)
    for f, atoms in enumerate(Chem.GetMolFrags(mol)):
        fragment[list(atoms)] = f
    same = fragment[:, None] == fragment[None, :]
    assert ((spd == UNREACHABLE) == ~same).all()
    # triangle inequality over finite distances: spd[i,k] <= spd[i,j] + spd[j,k]
    finite = np.where(same, spd, 10**6)
    assert (finite[:, None, :] <= finite[:, :, None] + finite[None, :, :]).all()

    # degree, and the atomic numbers the model's 3D pair types are read from
    assert data.degree.tolist() == adj.sum(1).tolist()
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    z = np.where((z >= 1) & (z <= 118), z, 119)
    assert (data.x[:, 0].numpy() + 1 == z).all()

    codes = _matrix(data, "pair_path").astype(np.int64)  # [n, n, 5, 3]
    nonzero_hop = (codes != 0).any(-1)
    hops = nonzero_hop.sum(-1)
    bond_code = {}
    for (i, j), attr in zip(data.edge_index.t().tolist(), data.edge_attr.tolist()):
        bond_code[(i, j)] = tuple(v + 2 for v in attr)
    assert not codes[~same].any() and not codes[np.eye(n, dtype=bool)].any()
    # hops are a prefix: no zero hop before a non-zero one
    assert (np.diff(nonzero_hop.astype(np.int8), axis=-1) <= 0).all()
    if transform_name == "correct":
        expect = np.where(same, np.minimum(spd, 5), 0)
        assert (hops == expect).all()
        for i in range(n):
            for j in range(n):
                if i == j or not same[i, j]:
                    continue
                # walk the codes along a shortest path: each hop is a bond that gets one closer
                frontier = {i}
                for k in range(min(spd[i, j], 5)):
                    hop = tuple(codes[i, j, k])
                    nxt = {
                        b for a in frontier for b in range(n)
                        if bond_code.get((a, b)) == hop and spd[b, j] == spd[i, j] - k - 1
                    }
                    assert nxt, f"hop {k} of {i}->{j} is not a bond towards {j}"
                    frontier = nxt
    else:
        assert (hops <= np.where(same, np.minimum(spd, 5), 0)).all()
        valid = set(bond_code.values()) | {(NON_BOND,) * 3}
        for vec in codes[nonzero_hop]:
            assert tuple(vec) in valid


def featurise_or_molecule_error(make):
    """Run featurisation; MoleculeError is an accepted outcome, anything else fails."""
    try:
        return make()
    except MoleculeError as err:
        assert str(err)
        return None


_MODEL = {}


def tiny_model():
    if not _MODEL:
        torch.manual_seed(0)
        _MODEL["encoder"] = TransformerM(num_layers=2, embed_dim=16, ffn_dim=16, num_heads=4, num_kernels=8).eval()
        _MODEL["head"] = GapHead(16).eval()
    return _MODEL["encoder"], _MODEL["head"]


def check_model_finite(datas) -> None:
    encoder, head = tiny_model()
    batch = Batch.from_data_list(datas)
    with torch.no_grad():
        modes = torch.arange(batch.num_graphs) % 3  # 2D+3D, 2D, 3D (2D where no coordinates)
        out = encoder(batch, modes)
        assert torch.isfinite(out.tokens).all() and torch.isfinite(head(out)).all()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = encoder(batch)
            assert torch.isfinite(out.tokens.float()).all() and torch.isfinite(head(out).float()).all()


# ------------------------------------------------------------------- tests
@FUZZ
@given(mol=random_graph_molecules())
def test_random_graphs_featurise_consistently(mol):
    data = mol_to_data(mol)
    check_graph(CORRECT(data.clone()), mol, "correct")
    check_graph(REFERENCE(data.clone()), mol, "reference")
    # both modes agree on distances
    assert torch.equal(CORRECT(data.clone()).pair_spd, REFERENCE(data.clone()).pair_spd)


@FUZZ
@given(smiles=mutated_smiles())
def test_mutated_real_smiles_never_crash(smiles):
    data = featurise_or_molecule_error(lambda: smiles_to_data(smiles))
    if data is None:
        return
    mol = Chem.MolFromSmiles(smiles.strip())
    check_graph(CORRECT(data.clone()), mol, "correct")
    check_graph(REFERENCE(data.clone()), mol, "reference")
    check_model_finite([CORRECT(data.clone())])


@settings(FUZZ, max_examples=50)
@given(smiles=grammar_smiles)
def test_grammar_strings_featurise_or_raise_molecule_error(smiles):
    data = featurise_or_molecule_error(lambda: CORRECT(smiles_to_data(smiles, max_atoms=64)))
    if data is not None:
        check_graph(data, Chem.MolFromSmiles(smiles.strip()), "correct")


@FUZZ
@given(mol=random_graph_molecules(max_atoms=12), seed=st.integers(0, 2**16))
def test_spd_follows_atom_renumbering(mol, seed):
    n = mol.GetNumAtoms()
    order = np.random.default_rng(seed).permutation(n).tolist()
    renumbered = Chem.RenumberAtoms(mol, order)  # new atom k is old atom order[k]
    a = _matrix(CORRECT(mol_to_data(mol)), "pair_spd")
    b = _matrix(CORRECT(mol_to_data(renumbered)), "pair_spd")
    assert (b == a[np.ix_(order, order)]).all()


@st.composite
def molecules_with_coordinates(draw):
    """Random valid molecules with coordinates on a coarse grid (coincident atoms happen)."""
    mol = draw(random_graph_molecules(max_atoms=10))
    data = CORRECT(mol_to_data(mol))
    n = data.num_nodes
    scale = draw(st.sampled_from([0.0, 1.0, 1e2, 1e4]))
    grid = draw(st.lists(st.integers(-2, 2), min_size=3 * n, max_size=3 * n))
    data.pos = torch.tensor(grid, dtype=torch.float32).view(n, 3) * scale
    data.has_pos = torch.tensor([draw(st.booleans())])
    if not data.has_pos.item():
        data.pos = torch.zeros(n, 3)
    return data


@settings(FUZZ, max_examples=30)
@given(datas=st.lists(molecules_with_coordinates(), min_size=1, max_size=4))
def test_encoder_is_finite_on_random_batches(datas):
    check_model_finite(datas)


@pytest.mark.parametrize("smiles", REAL_SMILES)
def test_seed_molecules_pass_every_check(smiles):
    mol = Chem.MolFromSmiles(smiles)
    data = mol_to_data(mol)
    check_graph(CORRECT(data.clone()), mol, "correct")
    check_graph(REFERENCE(data.clone()), mol, "reference")
