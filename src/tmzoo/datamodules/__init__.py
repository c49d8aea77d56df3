"""LightningDataModules for PCQM4Mv2, QM9, PDBBind and users' own files."""
