"""PyG datasets of PCQM4Mv2, QM9 and PDBBind, and LightningDataModules over them and users' own files."""

from tmzoo.datamodules.base import MoleculeDataModule, target_statistics
from tmzoo.datamodules.datasets import MoleculeDataset
from tmzoo.datamodules.featurized import FeaturizedDataModule
from tmzoo.datamodules.files import FilesDataModule
from tmzoo.datamodules.pcqm4mv2 import PCQM4Mv2DataModule, PCQM4Mv2Dataset
from tmzoo.datamodules.pdbbind import PDBBindDataModule, PDBBindDataset
from tmzoo.datamodules.properties import PropertiesDataModule
from tmzoo.datamodules.qm9 import QM9_TARGETS, QM9DataModule, QM9Dataset

__all__ = [
    "MoleculeDataset",
    "QM9Dataset",
    "PCQM4Mv2Dataset",
    "PDBBindDataset",
    "MoleculeDataModule",
    "FeaturizedDataModule",
    "PCQM4Mv2DataModule",
    "QM9DataModule",
    "QM9_TARGETS",
    "PDBBindDataModule",
    "FilesDataModule",
    "PropertiesDataModule",
    "target_statistics",
]
