"""LightningDataModules for PCQM4Mv2, QM9, PDBBind and users' own files."""

from tmzoo.datamodules.base import MoleculeDataModule, target_statistics
from tmzoo.datamodules.featurized import FeaturizedDataModule
from tmzoo.datamodules.pcqm4mv2 import PCQM4Mv2DataModule
from tmzoo.datamodules.pdbbind import PDBBindDataModule
from tmzoo.datamodules.qm9 import QM9_TARGETS, QM9DataModule

try:
    from tmzoo.datamodules.files import FilesDataModule
except ImportError:  # pragma: no cover - files.py is optional
    FilesDataModule = None

__all__ = [
    "MoleculeDataModule",
    "FeaturizedDataModule",
    "PCQM4Mv2DataModule",
    "QM9DataModule",
    "QM9_TARGETS",
    "PDBBindDataModule",
    "FilesDataModule",
    "target_statistics",
]
