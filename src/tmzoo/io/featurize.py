"""One user record → featurised graph + the mode it is read with (auto, 2d, 3d, 2d3d)."""

from __future__ import annotations

import torch
from torch_geometric.data import Data

from tmzoo.chem.conformers import embed_conformer
from tmzoo.chem.molecule import MoleculeError, mol_to_data
from tmzoo.io.records import Record
from tmzoo.models.output import Mode

MODES = ("auto", "2d", "3d", "2d3d")


def record_mode(requested: str, has_pos: bool, model_has_3d: bool = True) -> Mode:
    """The mode a record is read with; ``MoleculeError`` when it cannot be honoured."""
    if requested == "auto":
        return Mode.BOTH if has_pos and model_has_3d else Mode.ONLY_2D
    mode = Mode.parse(requested)
    if mode != Mode.ONLY_2D:
        if not model_has_3d:
            raise MoleculeError(f"mode {requested} asked but the model has no 3D channel")
        if not has_pos:
            raise MoleculeError(f"mode {requested} needs 3D coordinates and this record has none")
    return mode


def featurize_record(
    record: Record,
    transform,
    mode: str = "auto",
    model_has_3d: bool = True,
    max_atoms: int | None = 512,
    conformers: bool = False,
    seed: int = 0,
) -> Data:
    """Graph with transform outputs, ``idx`` (record index) and ``mode``; raises ``MoleculeError``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if record.mol is None:
        raise MoleculeError(record.error or "no molecule")
    mol = record.mol
    if conformers and mol.GetNumConformers() == 0 and mode != "2d":
        mol = embed_conformer(mol, seed=seed)
    data = mol_to_data(mol, use_coordinates=True, max_atoms=max_atoms)
    chosen = record_mode(mode, bool(data.has_pos), model_has_3d)
    data = transform(data)
    data.idx = torch.tensor([record.index])
    data.mode = torch.tensor([int(chosen)])
    return data
