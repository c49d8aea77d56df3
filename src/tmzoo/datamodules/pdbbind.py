"""PDBBind v2016 protein-ligand complexes as single graphs (ligand + binding pocket).

``root`` holds one folder per complex (``{id}/{id}_ligand.sdf``, ``{id}_ligand.mol2``,
``{id}_pocket.pdb``; each possibly gzipped) and the index files ``INDEX_refined_data.2016`` and
``INDEX_core_data.2016`` (in ``root`` or ``root/index``; the −logKd/Ki column is the target).

One graph per complex: the ligand's heavy atoms (from the SDF, or from the mol2 when RDKit
cannot sanitise the SDF) followed by the pocket's heavy atoms that lie within ``cutoff`` Å of
any ligand atom. Pocket atoms are selected one by one (residues are not kept whole) and
waters are left out; their OGB features are computed on the whole pocket, so degree,
hydrogen count and ring membership describe the residue, not the cut. Bonds are the covalent
bonds inside each part (the pocket's from RDKit's PDB reader, between selected atoms); there
are no ligand-pocket bonds. ``ligand_mask`` marks the ligand atoms.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem
from torch_geometric.utils import subgraph

from tmzoo.chem.molecule import MoleculeError, mol_to_data
from tmzoo.datamodules.cache import FeatureCache
from tmzoo.datamodules.featurized import FeaturizedDataModule
from tmzoo.datamodules.readers import find_file, open_text

log = logging.getLogger(__name__)

READER_VERSION = 1  # part of the cache key: bump it when the reader's output changes

WATERS = {"HOH", "WAT", "DOD", "H2O"}
PARTIAL_SANITIZE = (
    Chem.SanitizeFlags.SANITIZE_FINDRADICALS
    | Chem.SanitizeFlags.SANITIZE_SETAROMATICITY
    | Chem.SanitizeFlags.SANITIZE_SETCONJUGATION
    | Chem.SanitizeFlags.SANITIZE_SETHYBRIDIZATION
    | Chem.SanitizeFlags.SANITIZE_SYMMRINGS
)


def read_index(path: Path) -> dict[str, float]:
    """``{PDB code: -logKd/Ki}`` from a PDBBind index file (4th column)."""
    affinities = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        fields = line.split()
        if not fields or line.startswith("#"):
            continue
        try:
            affinities[fields[0].lower()] = float(fields[3])
        except (IndexError, ValueError) as err:
            raise ValueError(f"{path}:{number}: no -logKd/Ki in the 4th column ({err})") from err
    return affinities


def _text(path: Path | None) -> str | None:
    if path is None:
        return None
    with open_text(path) as handle:
        return handle.read()


def read_ligand(folder: Path, code: str) -> Chem.Mol:
    """The ligand's heavy atoms: SDF, else mol2 (RDKit cannot sanitise about half the SDFs).

    Files may be gzipped (``.sdf.gz``, ``.mol2.gz``); the SDF's first record is used.
    """
    sdf = find_file(folder, f"{code}_ligand.sdf")
    mol2 = find_file(folder, f"{code}_ligand.mol2")
    if sdf is None and mol2 is None:
        raise MoleculeError(f"no {code}_ligand.sdf or {code}_ligand.mol2 in {folder}")
    mol = None
    if sdf is not None:
        mol = Chem.MolFromMolBlock(_text(sdf), sanitize=True, removeHs=True)
    if mol is None and mol2 is not None:
        mol = Chem.MolFromMol2Block(_text(mol2), sanitize=True, removeHs=True)
    if mol is None:
        raise MoleculeError("ligand: RDKit cannot sanitise the SDF nor the mol2")
    return without_hydrogens(mol)


def without_hydrogens(mol: Chem.Mol, sanitize: bool = True) -> Chem.Mol:
    """All hydrogens removed (``removeHs`` keeps those on aromatic query bonds of PDBBind's
    SDFs, and OGB's hydrogen count must not depend on which were kept)."""
    try:
        return Chem.RemoveAllHs(mol, sanitize=sanitize)
    except Exception as err:  # RDKit raises several unrelated types here
        raise MoleculeError(f"removing hydrogens failed: {type(err).__name__}: {err}") from err


def read_pocket(folder: Path, code: str) -> Chem.Mol:
    """The pocket (``{code}_pocket.pdb[.gz]``) without hydrogens; a pocket RDKit cannot
    sanitise gets a partial sanitisation (ring, aromaticity, hybridisation perception)."""
    path = find_file(folder, f"{code}_pocket.pdb")
    if path is None:
        raise MoleculeError(f"no {code}_pocket.pdb in {folder}")
    block = _text(path)
    mol = Chem.MolFromPDBBlock(block, sanitize=True, removeHs=True)
    if mol is None:
        mol = Chem.MolFromPDBBlock(block, sanitize=False, removeHs=False)
        if mol is None:
            raise MoleculeError(f"pocket: RDKit cannot read {path.name}")
        try:
            mol.UpdatePropertyCache(strict=False)
            Chem.SanitizeMol(mol, PARTIAL_SANITIZE, catchErrors=True)
        except Exception as err:  # RDKit raises several unrelated types here
            raise MoleculeError(f"pocket: {type(err).__name__}: {err}") from err
        mol = without_hydrogens(mol, sanitize=False)
    else:
        mol = without_hydrogens(mol)
    if mol.GetNumConformers() == 0:
        raise MoleculeError(f"pocket: {path.name} has no coordinates")
    return mol


def pocket_selection(pocket: Chem.Mol, ligand_pos: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Mask of the pocket's heavy, non-water atoms within ``cutoff`` Å of a ligand atom."""
    pos = torch.tensor(pocket.GetConformer().GetPositions(), dtype=torch.float32)
    near = torch.cdist(pos, ligand_pos).min(dim=1).values <= cutoff
    keep = torch.tensor([
        atom.GetAtomicNum() > 1
        and (atom.GetPDBResidueInfo() is None
             or atom.GetPDBResidueInfo().GetResidueName().strip() not in WATERS)
        for atom in pocket.GetAtoms()
    ])
    return near & keep


def featurize_complex(payload: tuple[str, str, float], transform, cutoff: float):
    """Complex folder -> one ``Data``: ligand atoms, then the selected pocket atoms."""
    folder, code, affinity = payload
    folder = Path(folder)
    if not folder.is_dir():
        raise MoleculeError(f"no folder {folder}")
    ligand = mol_to_data(read_ligand(folder, code))
    pocket_mol = read_pocket(folder, code)
    mask = pocket_selection(pocket_mol, ligand.pos, cutoff)
    if not mask.any():
        raise MoleculeError(f"no pocket atom within {cutoff} Å of the ligand")
    pocket = mol_to_data(pocket_mol)
    edge_index, edge_attr = subgraph(mask, pocket.edge_index, pocket.edge_attr,
                                     relabel_nodes=True, num_nodes=pocket.num_nodes)
    n_ligand, n_pocket = ligand.num_nodes, int(mask.sum())
    data = type(ligand)(
        x=torch.cat([ligand.x, pocket.x[mask]]),
        edge_index=torch.cat([ligand.edge_index, edge_index + n_ligand], dim=1),
        edge_attr=torch.cat([ligand.edge_attr, edge_attr]),
        pos=torch.cat([ligand.pos, pocket.pos[mask]]),
        has_pos=torch.tensor([True]),
        ligand_mask=torch.arange(n_ligand + n_pocket) < n_ligand,
        num_nodes=n_ligand + n_pocket,
        y=torch.tensor([[affinity]], dtype=torch.float32),
        name=code,
    )
    return transform(data)


class PDBBindDataModule(FeaturizedDataModule):
    """PDBBind v2016 affinity: train/val = refined minus core (seeded), test = core.

    Args:
        root: PDBBind folder (complex folders and index files).
        cutoff: pocket atoms within this distance (Å) of any ligand atom are kept.
        val_fraction: share of refined-minus-core complexes used for validation.
        seed: seed of the train/val split.
    """

    cache_name = "pdbbind"
    failures_file = "skipped.csv"

    def __init__(
        self,
        root: str,
        cutoff: float = 6.0,
        val_fraction: float = 0.1,
        seed: int = 0,
        refined_index: str = "INDEX_refined_data.2016",
        core_index: str = "INDEX_core_data.2016",
        cache_dir: str | None = None,
        num_proc: int | None = None,
        verify_cache: str = "auto",
        batch_size: int = 16,
        num_workers: int = 0,
        max_hops: int = 5,
        reference_compatible: bool = False,
    ):
        super().__init__(root, cache_dir, num_proc, verify_cache, batch_size, num_workers,
                         max_hops, reference_compatible)
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, not {cutoff}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
        self.cutoff = float(cutoff)
        self.val_fraction = val_fraction
        self.seed = seed
        self.refined_path = self._find_index(refined_index)
        self.core_path = self._find_index(core_index)
        self.refined = read_index(self.refined_path)
        self.core = read_index(self.core_path)
        self.affinity = {**self.refined, **self.core}
        self.codes = sorted(self.affinity)  # record index = position in this list

    def _find_index(self, name: str) -> Path:
        for path in (self.root / name, self.root / "index" / name):
            if path.is_file():
                return path
        raise FileNotFoundError(f"PDBBind index {name} is neither in {self.root} nor in "
                                f"{self.root / 'index'}")

    # ----------------------------------------------------------------- describe
    @property
    def target_names(self) -> list[str]:
        return ["affinity"]

    @property
    def target_units(self) -> list[str]:
        return ["-logKd/Ki"]

    @property
    def has_coordinates(self) -> bool:
        return True

    # -------------------------------------------------------------------- cache
    def source_files(self) -> list[Path]:
        return [self.refined_path, self.core_path]

    def cache_settings(self) -> dict:  # bump READER_VERSION when reading changes
        # complex folders are identified by their files' sizes and mtimes
        return {"version": READER_VERSION, "cutoff": self.cutoff, "pocket": "atoms, no waters",
                "ligand": "sdf>mol2", "hydrogens": "all removed",
                "complexes": self._complex_files_digest()}

    def _complex_files_digest(self) -> list:
        out = []
        for code in self.codes:
            for suffix in ("_ligand.sdf", "_ligand.mol2", "_pocket.pdb"):
                path = find_file(self.root / code, f"{code}{suffix}")
                if path is not None:
                    stat = path.stat()
                    out.append([path.name, stat.st_size, stat.st_mtime_ns])
        return out

    def featurizer(self):
        return functools.partial(featurize_complex, transform=self.transform(), cutoff=self.cutoff)

    def job_count(self) -> int:
        return len(self.codes)

    def jobs(self):
        for index, code in enumerate(self.codes):
            yield index, code, (str(self.root / code), code, self.affinity[code])

    # ------------------------------------------------------------------- splits
    def split_positions(self, cache: FeatureCache) -> dict[str, np.ndarray]:
        record = np.asarray(cache.store.column("idx")).reshape(-1)
        is_core = np.asarray([self.codes[r] in self.core for r in record], dtype=bool)
        pool = np.flatnonzero(~is_core)
        order = np.random.default_rng(self.seed).permutation(len(pool))
        n_val = int(round(len(pool) * self.val_fraction))
        skipped = cache.failures
        if skipped:
            log.warning("%d PDBBind complexes skipped (see %s)", len(skipped),
                        cache.folder / self.failures_file)
        return {
            "train": np.sort(pool[order[n_val:]]),
            "val": np.sort(pool[order[:n_val]]),
            "test": np.flatnonzero(is_core),
        }

    def split_info(self) -> dict:
        return {"seed": self.seed, "val_fraction": self.val_fraction, "cutoff": self.cutoff}


__all__ = ["PDBBindDataModule", "featurize_complex", "read_index", "read_ligand", "read_pocket"]
