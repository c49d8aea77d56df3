"""One user record → featurised graph + the mode it is read with (auto, 2d, 3d, 2d3d).

The checkpoint's recorded featurisation is applied here, the one place every prediction
entry point goes through: hydrogens (added from SMILES with ``Chem.AddHs(addCoords=True)``,
kept from SDF, for a model trained with them; removed otherwise), the transform's arguments
and the evaluation mode the model was validated in (used when ``mode`` is ``auto``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from rdkit import Chem
from torch_geometric.data import Data

from tmzoo.chem.conformers import embed_conformer
from tmzoo.chem.molecule import MoleculeError, mol_to_data
from tmzoo.data.transforms import transformer_m_transform
from tmzoo.io.records import Record
from tmzoo.modes import MODES, Mode

_WITHOUT_HYDROGENS = ("", "none", "no", "false", "removed", "remove", "implicit", "heavy")


def record_mode(
    requested: str, has_pos: bool, model_has_3d: bool = True, eval_mode: str | None = None,
    model_has_2d: bool = True,
) -> Mode:
    """The mode a record is read with; ``MoleculeError`` when it cannot be honoured.

    ``eval_mode`` (the checkpoint's evaluation mode) decides what ``auto`` means: ``3d`` reads
    every record in 3D (a record without coordinates is an error), ``2d`` reads every record in
    2D; ``2d3d`` or ``None`` read records with coordinates in 2D+3D and the others in 2D. A model
    without a 2D channel reads in 3D only, whatever ``eval_mode`` says.
    """
    if requested == "auto":
        trained = Mode.parse(eval_mode) if isinstance(eval_mode, str) else (Mode(eval_mode) if eval_mode is not None else None)
        if not model_has_2d:
            trained = Mode.ONLY_3D
        if trained == Mode.ONLY_2D or not model_has_3d:
            return Mode.ONLY_2D
        if trained == Mode.ONLY_3D:
            if not has_pos:
                raise MoleculeError(
                    "this model reads molecules in 3D only and the record has no 3D coordinates; "
                    "use --conformers to embed one"
                )
            return Mode.ONLY_3D
        return Mode.BOTH if has_pos else Mode.ONLY_2D
    mode = Mode.parse(requested)
    if mode == Mode.ONLY_2D and not model_has_2d:
        raise MoleculeError("mode 2d asked but the model has no 2D channel")
    if mode != Mode.ONLY_2D:
        if not model_has_3d:
            raise MoleculeError(f"mode {requested} asked but the model has no 3D channel")
        if not has_pos:
            raise MoleculeError(f"mode {requested} needs 3D coordinates and this record has none")
    return mode


def wants_hydrogens(value) -> bool:
    """Whether a recorded ``hydrogens`` setting means explicit hydrogens (``True``, ``"explicit"``, ...)."""
    if isinstance(value, str):
        return value.strip().lower() not in _WITHOUT_HYDROGENS
    return bool(value)


def apply_hydrogens(mol: Chem.Mol, hydrogens: bool) -> Chem.Mol:
    """Explicit hydrogens (placed from the heavy atoms' coordinates) or none, as the model was trained."""
    if not hydrogens and mol.GetNumAtoms() == mol.GetNumHeavyAtoms():
        return mol  # nothing to remove (SMILES without [H])
    try:
        return Chem.AddHs(mol, addCoords=True) if hydrogens else Chem.RemoveHs(mol)
    except Exception as err:  # RDKit raises several exception types
        action = "adding" if hydrogens else "removing"
        raise MoleculeError(f"{action} hydrogens failed: {type(err).__name__}: {err}") from None


def featurize_record(
    record: Record,
    transform,
    mode: str = "auto",
    model_has_3d: bool = True,
    max_atoms: int | None = 512,
    conformers: bool = False,
    seed: int = 0,
    hydrogens: bool = False,
    eval_mode: str | None = None,
    model_has_2d: bool = True,
) -> Data:
    """Graph with transform outputs, ``idx`` (record index) and ``mode``; raises ``MoleculeError``."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if record.mol is None:
        raise MoleculeError(record.error or "no molecule")
    mol = record.mol
    if conformers and mol.GetNumConformers() == 0 and mode != "2d":
        mol = embed_conformer(mol, seed=seed)
    mol = apply_hydrogens(mol, hydrogens)
    data = mol_to_data(mol, use_coordinates=True, max_atoms=max_atoms)
    chosen = record_mode(mode, bool(data.has_pos), model_has_3d, eval_mode, model_has_2d)
    data = transform(data)
    data.idx = torch.tensor([record.index])
    data.mode = torch.tensor([int(chosen)])
    return data


@dataclass
class RecordFeaturizer:
    """:func:`featurize_record` with fixed settings (picklable, for loader workers).

    ``transform_args`` go to :func:`~tmzoo.data.transforms.transformer_m_transform`.
    """

    mode: str = "auto"
    transform_args: dict = field(default_factory=dict)
    hydrogens: bool = False
    eval_mode: str | None = None
    model_has_3d: bool = True
    model_has_2d: bool = True
    max_atoms: int | None = 512
    conformers: bool = False
    seed: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        self.transform = transformer_m_transform(**self.transform_args)

    def __call__(self, record: Record) -> Data:
        return featurize_record(
            record, self.transform, self.mode, self.model_has_3d, self.max_atoms, self.conformers, self.seed,
            self.hydrogens, self.eval_mode, self.model_has_2d,
        )
