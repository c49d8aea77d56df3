"""3D conformers for molecules given as SMILES (RDKit ETKDG, then MMFF), seeded."""

from __future__ import annotations

from rdkit import Chem
from rdkit.Chem import AllChem

from tmzoo.chem.molecule import MoleculeError


def embed_conformer(mol: Chem.Mol, seed: int = 0, optimize: bool = True) -> Chem.Mol:
    """A copy of ``mol`` (heavy atoms, input order) with one ETKDG(+MMFF) conformer."""
    with_h = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    if AllChem.EmbedMolecule(with_h, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(with_h, params) != 0:
            raise MoleculeError("RDKit could not embed a 3D conformer")
    if optimize and AllChem.MMFFHasAllMoleculeParams(with_h):
        AllChem.MMFFOptimizeMolecule(with_h, maxIters=500)
    return Chem.RemoveHs(with_h)
