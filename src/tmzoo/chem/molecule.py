"""RDKit molecule -> ``torch_geometric.data.Data`` with OGB atom and bond features.

Atoms are heavy atoms in input order (hydrogens only when the molecule carries them
explicitly, as QM9 does); ``x`` holds the 9 OGB atom features, ``edge_attr`` the 3 OGB
bond features for both directions of every bond. Coordinates, when given, go to ``pos``
and ``has_pos`` says so; a molecule without coordinates gets zeros and ``has_pos=False``.
"""

from __future__ import annotations


import numpy as np
import torch
from ogb.utils.features import allowable_features, atom_to_feature_vector, bond_to_feature_vector, safe_index
from rdkit import Chem, RDLogger
from torch_geometric.data import Data

RDLogger.DisableLog("rdApp.*")


MAX_COORDINATE = 1e6
"""Largest coordinate magnitude (Å) accepted; no molecule spans 100 µm."""


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


_OGB_BOND_STEREO = tuple(allowable_features["possible_bond_stereo_list"])


def _bond_features(bond) -> list[int]:
    """OGB's bond features; stereo values newer than OGB's vocabulary count as STEREONONE.

    RDKit >= 2024.03 perceives atropisomers (``STEREOATROPCW``/``CCW``, e.g. from CXSMILES
    wedges), which OGB's ``list.index`` lookup rejects; the RDKit the reference used reported
    no stereo on those bonds, so that is what they get here.
    """
    try:
        return bond_to_feature_vector(bond)
    except ValueError:
        if str(bond.GetStereo()) in _OGB_BOND_STEREO:
            raise MoleculeError(f"bond features failed for bond {bond.GetIdx()}") from None
        return [
            safe_index(allowable_features["possible_bond_type_list"], str(bond.GetBondType())),
            0,  # STEREONONE
            allowable_features["possible_is_conjugated_list"].index(bond.GetIsConjugated()),
        ]


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
    try:
        x = np.asarray([atom_to_feature_vector(a) for a in mol.GetAtoms()], dtype=np.int64)
    except Exception as err:  # ogb raises on elements outside its vocabulary
        raise MoleculeError(f"atom features failed: {err}") from err

    pairs, features = [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        feats = _bond_features(bond)
        pairs += ((i, j), (j, i))
        features += (feats, feats)
    edge_index = np.array(pairs, dtype=np.int64).reshape(-1, 2).T.copy()
    edge_attr = np.array(features, dtype=np.int64).reshape(-1, 3)

    pos = torch.zeros(n, 3)
    has_pos = False
    if use_coordinates and mol.GetNumConformers() > 0:
        try:
            conf = mol.GetConformer(conformer_id)
        except ValueError as err:  # RDKit: "Bad Conformer Id"
            raise MoleculeError(f"no conformer {conformer_id}: {err}") from err
        coords = torch.tensor(conf.GetPositions(), dtype=torch.float32)
        if not torch.isfinite(coords).all():
            raise MoleculeError("coordinates contain NaN or inf")
        if coords.abs().max() > MAX_COORDINATE:  # squared distances would overflow fp32 near 1e19
            raise MoleculeError(f"coordinates beyond ±{MAX_COORDINATE:g} Å")
        # a conformer RDKit marks 2D (a molfile drawn in 2D, Compute2DCoords) is a depiction,
        # not a geometry: reading it as 3D would feed flat layout coordinates to the 3D channel
        if conf.Is3D():
            pos, has_pos = coords, True

    return Data(
        x=torch.from_numpy(x),
        edge_index=torch.from_numpy(edge_index),
        edge_attr=torch.from_numpy(edge_attr),
        pos=pos,
        has_pos=torch.tensor([has_pos]),
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


__all__ = ["MoleculeError", "mol_from_smiles", "mol_to_data", "smiles_to_data", "heavy_atom_formula"]
