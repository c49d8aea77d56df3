"""Chemistry: RDKit molecules to PyG graphs."""

from tmzoo.chem.molecule import MoleculeError, mol_from_smiles, mol_to_data, smiles_to_data

__all__ = ["MoleculeError", "mol_from_smiles", "mol_to_data", "smiles_to_data"]
