"""RDKit molecule -> ``torch_geometric.data.Data`` with OGB atom and bond features.

Atoms are heavy atoms in input order (hydrogens only when the molecule carries them
explicitly, as QM9 does); ``x`` holds the 9 OGB atom features, ``edge_attr`` the 3 OGB
bond features for both directions of every bond. Coordinates, when given, go to ``pos``
and ``has_pos`` says so; a molecule without coordinates gets zeros and ``has_pos=False``.

The features are exactly those of OGB's ``atom_to_feature_vector`` and
``bond_to_feature_vector`` (``tests/test_chem_features.py`` compares them), computed a
column at a time: one RDKit getter mapped over all atoms, then numpy lookups. OGB's
vocabularies are restated here so that importing tmzoo does not import ``ogb``, whose
import starts a network version check.
"""

from __future__ import annotations

import numpy as np
import torch
from rdkit import Chem, RDLogger
from rdkit.Chem.rdchem import Atom, Bond
from torch_geometric.data import Data

RDLogger.DisableLog("rdApp.*")


MAX_COORDINATE = 1e6
"""Largest coordinate magnitude (Å) accepted; no molecule spans 100 µm."""

_FLOAT32_MAX = float(np.finfo(np.float32).max)

OGB_ALLOWABLE_FEATURES = {
    "possible_atomic_num_list": list(range(1, 119)) + ["misc"],
    "possible_chirality_list": ["CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER", "misc"],
    "possible_degree_list": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, "misc"],
    "possible_formal_charge_list": [-5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, "misc"],
    "possible_numH_list": [0, 1, 2, 3, 4, 5, 6, 7, 8, "misc"],
    "possible_number_radical_e_list": [0, 1, 2, 3, 4, "misc"],
    "possible_hybridization_list": ["SP", "SP2", "SP3", "SP3D", "SP3D2", "misc"],
    "possible_is_aromatic_list": [False, True],
    "possible_is_in_ring_list": [False, True],
    "possible_bond_type_list": ["SINGLE", "DOUBLE", "TRIPLE", "AROMATIC", "misc"],
    "possible_bond_stereo_list": ["STEREONONE", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS", "STEREOANY"],
    "possible_is_conjugated_list": [False, True],
}
"""``ogb.utils.features.allowable_features`` (ogb 1.3.6), the vocabulary of every feature column."""


class MoleculeError(ValueError):
    """A record that cannot become a graph; the message says why."""


def mol_from_smiles(smiles: str) -> Chem.Mol:
    """Parse a SMILES string with RDKit, raising :class:`MoleculeError` with the reason."""
    if smiles is None or not str(smiles).strip():
        raise MoleculeError("empty SMILES")
    if "\x00" in str(smiles):  # RDKit stops reading at a NUL, silently parsing a prefix
        raise MoleculeError(f"SMILES {smiles!r} contains a NUL character")
    mol = Chem.MolFromSmiles(str(smiles).strip())
    if mol is None:
        raise MoleculeError(f"RDKit cannot parse SMILES {smiles!r}")
    return mol


# --------------------------------------------------------------------- feature tables
def _enum_lookup(enum, vocabulary: list, fallback: int) -> np.ndarray:
    """``table[int(value)]``: the index of an RDKit enum value's name in an OGB vocabulary.

    Names outside the vocabulary get ``fallback``, and so does the table's extra last entry,
    which ``take(..., mode="clip")`` gives values newer than this RDKit.
    """
    names = {int(value): str(value) for value in enum.values.values()}
    table = np.full(max(names) + 2, fallback, dtype=np.int64)
    for code, name in names.items():
        if name in vocabulary:
            table[code] = vocabulary.index(name)
    return table


def _misc(key: str) -> int:
    return len(OGB_ALLOWABLE_FEATURES[key]) - 1


_CHIRALITY = _enum_lookup(
    Chem.ChiralType, OGB_ALLOWABLE_FEATURES["possible_chirality_list"], _misc("possible_chirality_list")
)
_HYBRIDIZATION = _enum_lookup(
    Chem.HybridizationType, OGB_ALLOWABLE_FEATURES["possible_hybridization_list"], _misc("possible_hybridization_list")
)
_BOND_TYPE = _enum_lookup(
    Chem.BondType, OGB_ALLOWABLE_FEATURES["possible_bond_type_list"], _misc("possible_bond_type_list")
)
# OGB has no entry (its list.index raises) for stereo values newer than its vocabulary, such as
# the atropisomers (STEREOATROPCW/CCW) RDKit >= 2024.03 perceives from CXSMILES wedges; the RDKit
# the reference used reported no stereo on those bonds, so they count as STEREONONE
_BOND_STEREO = _enum_lookup(Chem.BondStereo, OGB_ALLOWABLE_FEATURES["possible_bond_stereo_list"], 0)

# atom columns in OGB's order: the RDKit getter, then ``raw + offset``, kept when in
# ``0..high``, else the column's "misc" index (chirality and hybridization go through a table first)
_ATOM_GETTERS = (
    Atom.GetAtomicNum, Atom.GetChiralTag, Atom.GetTotalDegree, Atom.GetFormalCharge, Atom.GetTotalNumHs,
    Atom.GetNumRadicalElectrons, Atom.GetHybridization, Atom.GetIsAromatic, Atom.IsInRing,
)
_ATOM_OFFSET = np.array([-1, 0, 0, 5, 0, 0, 0, 0, 0], dtype=np.int64)[:, None]
_ATOM_HIGH = np.array([117, 4, 10, 10, 8, 4, 5, 1, 1], dtype=np.int64)[:, None]
_ATOM_MISC = np.array([118, 4, 11, 11, 9, 5, 5, 1, 1], dtype=np.int64)[:, None]
_BOND_GETTERS = (Bond.GetBeginAtomIdx, Bond.GetEndAtomIdx, Bond.GetBondType, Bond.GetStereo, Bond.GetIsConjugated)


def atom_features(mol: Chem.Mol) -> np.ndarray:
    """``[N, 9]`` int64: OGB's ``atom_to_feature_vector`` of every atom."""
    atoms = list(map(mol.GetAtomWithIdx, range(mol.GetNumAtoms())))
    raw = np.array([list(map(getter, atoms)) for getter in _ATOM_GETTERS], dtype=np.int64).reshape(9, -1)
    raw[1] = _CHIRALITY.take(raw[1], mode="clip")
    raw[6] = _HYBRIDIZATION.take(raw[6], mode="clip")
    raw += _ATOM_OFFSET
    return np.where((raw < 0) | (raw > _ATOM_HIGH), _ATOM_MISC, raw).T.copy()


def bond_graph(mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray]:
    """``edge_index [2, 2B]`` and ``edge_attr [2B, 3]`` (int64): both directions of every bond,
    in bond order (i→j, then j→i), with OGB's ``bond_to_feature_vector``."""
    bonds = list(map(mol.GetBondWithIdx, range(mol.GetNumBonds())))
    raw = np.array([list(map(getter, bonds)) for getter in _BOND_GETTERS], dtype=np.int64).reshape(5, -1)
    edge_index = np.empty((2, 2 * raw.shape[1]), dtype=np.int64)
    edge_index[:, 0::2] = raw[:2]
    edge_index[:, 1::2] = raw[1::-1]
    features = np.stack([_BOND_TYPE.take(raw[2], mode="clip"), _BOND_STEREO.take(raw[3], mode="clip"), raw[4]], 1)
    return edge_index, features.repeat(2, axis=0)


def mol_to_data(
    mol: Chem.Mol,
    *,
    use_coordinates: bool = True,
    max_atoms: int | None = None,
    conformer_id: int = -1,
) -> Data:
    """Featurise ``mol``; coordinates are read from its conformer when asked and present."""
    if mol is None:
        raise MoleculeError("no molecule")
    n = mol.GetNumAtoms()
    if n == 0:
        raise MoleculeError("molecule has no atoms")
    if max_atoms is not None and n > max_atoms:
        raise MoleculeError(f"{n} atoms exceed the limit of {max_atoms}")
    try:  # RDKit raises on unsanitised molecules (implicit valence not computed)
        x = atom_features(mol)
    except Exception as err:  # noqa: BLE001  (any RDKit failure is this record's error)
        raise MoleculeError(f"atom features failed: {err}") from err
    try:
        edge_index, edge_attr = bond_graph(mol)
    except Exception as err:  # noqa: BLE001
        raise MoleculeError(f"bond features failed: {err}") from err

    pos = None
    if use_coordinates and mol.GetNumConformers() > 0:
        try:
            conf = mol.GetConformer(conformer_id)
        except ValueError as err:  # RDKit: "Bad Conformer Id"
            raise MoleculeError(f"no conformer {conformer_id}: {err}") from err
        coords = conf.GetPositions()  # float64 [N, 3]; numpy: torch's per-call overhead is 10x here
        extent = np.abs(coords).max()  # NaN propagates
        if not extent <= MAX_COORDINATE:  # squared distances would overflow fp32 near 1e19
            if not extent <= _FLOAT32_MAX:
                raise MoleculeError("coordinates contain NaN or inf")
            raise MoleculeError(f"coordinates beyond ±{MAX_COORDINATE:g} Å")
        # a conformer RDKit marks 2D (a molfile drawn in 2D, Compute2DCoords) is a depiction,
        # not a geometry: reading it as 3D would feed flat layout coordinates to the 3D channel
        if conf.Is3D():
            pos = torch.from_numpy(coords.astype(np.float32))

    return Data(
        x=torch.from_numpy(x),
        edge_index=torch.from_numpy(edge_index),
        edge_attr=torch.from_numpy(edge_attr),
        pos=torch.zeros(n, 3) if pos is None else pos,
        has_pos=torch.tensor([pos is not None]),
        num_nodes=n,
    )


def smiles_to_data(smiles: str, **kwargs) -> Data:
    """Featurise a SMILES string (no coordinates)."""
    return mol_to_data(mol_from_smiles(smiles), use_coordinates=False, **kwargs)


def heavy_atom_formula(mol: Chem.Mol) -> str:
    """Hill-ordered heavy-atom formula, used to check that two records are one molecule."""
    counts: dict[str, int] = {}
    for atom in mol.GetAtoms():
        if atom.GetAtomicNum() > 1:
            counts[atom.GetSymbol()] = counts.get(atom.GetSymbol(), 0) + 1
    order = sorted(counts, key=lambda s: (s != "C", s))
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in order)


__all__ = [
    "MoleculeError", "mol_from_smiles", "mol_to_data", "smiles_to_data", "heavy_atom_formula",
    "atom_features", "bond_graph", "OGB_ALLOWABLE_FEATURES",
]
