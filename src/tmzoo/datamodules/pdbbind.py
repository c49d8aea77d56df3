"""PDBBind v2016 protein-ligand complexes as single graphs (ligand + binding pocket).

``root`` holds one folder per complex (``{id}/{id}_ligand.sdf``, ``{id}_ligand.mol2``,
``{id}_pocket.pdb``; each possibly gzipped), directly or one folder down (the release's
``refined-set/`` and ``general-set-except-refined/``), and the index files
``INDEX_refined_data.2016`` and ``INDEX_core_data.2016`` (in ``root`` or ``root/index``; the
−logKd/Ki column is the target); optionally the general set's index
(``INDEX_general_PL_data.2016``). Instead of the index files, a labels CSV may give the
complexes and their affinities (see :func:`read_labels_csv`).

One graph per complex: the ligand's heavy atoms (from the SDF, or from the mol2 when RDKit
cannot sanitise the SDF) followed by the pocket's heavy atoms that lie within ``cutoff`` Å of
any ligand atom. Pocket atoms are selected one by one (residues are not kept whole) and
waters are left out; their OGB features are computed on the whole pocket, so degree,
hydrogen count and ring membership describe the residue, not the cut. Bonds are the covalent
bonds inside each part (the pocket's from RDKit's PDB reader, between selected atoms); there
are no ligand-pocket bonds. ``ligand_mask`` marks the ligand atoms.
"""

from __future__ import annotations

import csv
import functools
import logging
from pathlib import Path

import numpy as np
import torch
from rdkit import Chem
from torch_geometric.utils import subgraph

from tmzoo.chem.molecule import MoleculeError, mol_to_data
from tmzoo.datamodules.cache import FeatureCache
from tmzoo.datamodules.datasets import MoleculeDataset
from tmzoo.datamodules.featurized import FeaturizedDataModule
from tmzoo.datamodules.readers import find_file, open_text

log = logging.getLogger(__name__)

READER_VERSION = 2  # part of the cache key: bump it when the reader's output changes
LABEL_CODE_COLUMNS = ("pdb_id", "pdbid", "code", "pdb", "id")
LABEL_VALUE_COLUMNS = ("affinity", "-logkd/ki", "pk", "label", "y")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}

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


def read_labels_csv(path: Path) -> tuple[dict[str, float], dict[str, str]]:
    """``({PDB code: affinity}, {PDB code: split})`` from a CSV with a code column (one of
    ``pdb_id, pdbid, code, pdb, id``), an affinity column (``affinity, -logKd/Ki, pK, label,
    y``) and optionally ``split`` (``train``, ``val``, ``test``; empty when absent)."""
    with open_text(path) as handle:
        rows = csv.DictReader(handle)
        columns = {name.strip().lower(): name for name in rows.fieldnames or []}
        code_column = next((columns[c] for c in LABEL_CODE_COLUMNS if c in columns), None)
        value_column = next((columns[c] for c in LABEL_VALUE_COLUMNS if c in columns), None)
        if code_column is None or value_column is None:
            raise ValueError(f"{path} needs a PDB code column (one of {LABEL_CODE_COLUMNS}) and an "
                             f"affinity column (one of {LABEL_VALUE_COLUMNS}); it has {rows.fieldnames}")
        split_column = columns.get("split")
        labels, splits = {}, {}
        for line, row in enumerate(rows, 2):
            code = (row[code_column] or "").strip().lower()
            try:
                value = float(row[value_column])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: affinity {row[value_column]!r} of {code!r} is not a number") from None
            if not code:
                raise ValueError(f"{path}:{line}: no PDB code")
            if code in labels:
                raise ValueError(f"{path}:{line}: {code} is listed twice")
            labels[code] = value
            if split_column is not None:
                split = (row[split_column] or "").strip().lower()
                if split not in SPLIT_NAMES:
                    raise ValueError(f"{path}:{line}: split {split!r} of {code} is not one of {sorted(SPLIT_NAMES)}")
                splits[code] = SPLIT_NAMES[split]
    return labels, splits


def find_complex_folders(root: Path, codes) -> dict[str, Path]:
    """``{code: folder}`` of the complexes found as ``root/<code>/`` or ``root/*/<code>/``
    (PDB codes matched case-insensitively; the first found wins)."""
    wanted, found = set(codes), {}
    root = Path(root)
    parents = [root] + sorted(p for p in root.iterdir() if p.is_dir() and p.name.lower() not in wanted)
    for parent in parents:
        for child in sorted(parent.iterdir()):
            name = child.name.lower()
            if name in wanted and name not in found and child.is_dir():
                found[name] = child
    return found


def _text(path: Path) -> str:
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
    mol = Chem.MolFromMolBlock(_text(sdf), sanitize=True, removeHs=True) if sdf is not None else None
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
    sanitized = mol is not None
    if not sanitized:
        mol = Chem.MolFromPDBBlock(block, sanitize=False, removeHs=False)
        if mol is None:
            raise MoleculeError(f"pocket: RDKit cannot read {path.name}")
        try:
            mol.UpdatePropertyCache(strict=False)
            Chem.SanitizeMol(mol, PARTIAL_SANITIZE, catchErrors=True)
        except Exception as err:  # RDKit raises several unrelated types here
            raise MoleculeError(f"pocket: {type(err).__name__}: {err}") from err
    mol = without_hydrogens(mol, sanitize=sanitized)
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


def featurize_complex(payload: tuple[str, str, float], transform=None, cutoff: float = 6.0):
    """Complex folder -> one ``Data``: ligand atoms, then the selected pocket atoms
    (``transform`` applied if given)."""
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
    return data if transform is None else transform(data)


PDBBIND_SOURCE = (
    "PDBbind cannot be downloaded automatically: it requires registration. Register at "
    "http://www.pdbbind.org.cn (PDBbind+), download the v2016 refined set (and the general set, "
    "for general_index) with its index files, unpack them and pass that folder as root"
)


class PDBBindDataset(MoleculeDataset):
    """PDBBind complexes as a PyG dataset: one graph per complex (ligand + pocket atoms within
    ``cutoff`` Å, ``ligand_mask``, ``y [1, 1]`` = -logKd/Ki, ``name`` = PDB code).

    Records are the listed complexes in code order (:attr:`codes`); complexes that cannot be
    read are listed in ``failures.csv``. :meth:`download` cannot fetch PDBBind (registration):
    it says where to get it.

    Args:
        root: PDBBind folder (complex folders and index files; see the module docstring).
        cutoff: pocket atoms within this distance (Å) of any ligand atom are kept.
        refined_index, core_index, general_index: index file names (in ``root`` or ``root/index``).
        labels_csv: a CSV of PDB codes and affinities (:func:`read_labels_csv`; a relative
            path is looked up under ``root``) instead of the index files.
        Other arguments: :class:`MoleculeDataset`.
    """

    name = "pdbbind"

    def __init__(
        self,
        root: str | Path,
        transform=None,
        pre_transform=None,
        *,
        cutoff: float = 6.0,
        refined_index: str = "INDEX_refined_data.2016",
        core_index: str = "INDEX_core_data.2016",
        general_index: str | None = None,
        labels_csv: str | None = None,
        **options,
    ):
        if root is None:
            raise ValueError(f"PDBBind needs a root folder. {PDBBIND_SOURCE}")
        if cutoff <= 0:
            raise ValueError(f"cutoff must be positive, not {cutoff}")
        root = Path(root).expanduser()
        self.cutoff = float(cutoff)
        self.labels_path: Path | None = None
        self.assigned_split: dict[str, str] = {}
        if labels_csv is not None:
            path = Path(labels_csv)
            self.labels_path = path if path.is_absolute() or path.exists() else root / path
            self.affinity, self.assigned_split = read_labels_csv(self.labels_path)
            core_path = self._find_index(root, core_index, required=not self.assigned_split)
            self.index_paths = [p for p in (self.labels_path, core_path) if p is not None]
        else:
            core_path = self._find_index(root, core_index)
            self.index_paths = [self._find_index(root, refined_index), core_path]
            if general_index is not None:
                self.index_paths.append(self._find_index(root, general_index))
            self.affinity = {}
            for path in reversed(self.index_paths):  # refined and core values win
                self.affinity.update(read_index(path))
        self.core = read_index(core_path) if core_path else {}
        self.codes = sorted(self.affinity)  # record index = position in this list
        self._folders: dict[str, Path] | None = None
        super().__init__(root, transform, pre_transform, **options)

    @staticmethod
    def _find_index(root: Path, name: str, required: bool = True) -> Path | None:
        path = next((p for p in (root / name, root / "index" / name) if p.is_file()), None)
        if path is None and required:
            raise FileNotFoundError(f"PDBBind index {name} is neither in {root} nor in "
                                    f"{root / 'index'}. {PDBBIND_SOURCE}")
        return path

    @property
    def raw_dir(self) -> str:
        return str(self.data_root)

    @property
    def raw_file_names(self) -> list[str]:
        return [str(path.relative_to(self.data_root)) if path.is_relative_to(self.data_root) else str(path)
                for path in self.index_paths]

    def download(self) -> None:
        raise FileNotFoundError(PDBBIND_SOURCE)

    def complex_folders(self) -> dict[str, Path]:
        """``{code: folder}`` of the listed complexes found under ``root``."""
        if self._folders is None:
            self._folders = find_complex_folders(self.data_root, self.codes)
        return self._folders

    def source_files(self) -> list[Path]:
        return list(self.index_paths)

    def cache_settings(self) -> dict:  # bump READER_VERSION when reading changes
        # complex folders are identified by their files' sizes and mtimes
        return {"version": READER_VERSION, "cutoff": self.cutoff, "pocket": "atoms, no waters",
                "ligand": "sdf>mol2", "hydrogens": "all removed",
                "complexes": self._complex_files_digest()}

    def _complex_files_digest(self) -> list:
        folders = self.complex_folders()
        paths = (find_file(folders[code], f"{code}{suffix}") for code in self.codes if code in folders
                 for suffix in ("_ligand.sdf", "_ligand.mol2", "_pocket.pdb"))
        return [[path.name, path.stat().st_size, path.stat().st_mtime_ns] for path in paths if path is not None]

    def featurizer(self):
        return functools.partial(featurize_complex, transform=self.pre_transform, cutoff=self.cutoff)

    def job_count(self) -> int:
        return len(self.codes)

    def jobs(self):
        root = self.data_root
        folders = self.complex_folders()
        if not folders:
            raise FileNotFoundError(
                f"no complex folders under {root}: expected {len(self.codes)} folders such as "
                f"{root / self.codes[0]}/ (or one folder down, e.g. refined-set/{self.codes[0]}/) "
                f"holding {self.codes[0]}_ligand.sdf and {self.codes[0]}_pocket.pdb"
                if self.codes else f"no complexes listed for {root}"
            )
        for index, code in enumerate(self.codes):
            yield index, code, (str(folders.get(code, root / code)), code, self.affinity[code])


class PDBBindDataModule(FeaturizedDataModule):
    """PDBBind v2016 affinity: train/val = refined (and general) minus core (seeded), test = core.

    Args:
        root, cutoff, refined_index, core_index, labels_csv: as :class:`PDBBindDataset`; the
            ``split`` column of ``labels_csv``, else the core index when there is one, says
            which complexes are test.
        general_index: the general set's index (e.g. ``INDEX_general_PL_data.2016``): its
            complexes join the train/val pool.
        val_fraction: share of the train pool used for validation (when not given by a CSV).
        seed: seed of the train/val split.
    """

    target_names = ["affinity"]
    target_units = ["-logKd/Ki"]

    def __init__(
        self,
        root: str,
        cutoff: float = 6.0,
        val_fraction: float = 0.1,
        seed: int = 0,
        refined_index: str = "INDEX_refined_data.2016",
        core_index: str = "INDEX_core_data.2016",
        general_index: str | None = None,
        labels_csv: str | None = None,
        cache_dir: str | None = None,
        num_proc: int | None = None,
        verify_cache: str = "auto",
        batch_size: int = 16,
        num_workers: int = 0,
        max_hops: int = 5,
        reference_compatible: bool = False,
        cache_pairs: bool = False,
        batch_by_size: bool = True,
        max_atoms_per_batch: int | None = None,
        dense_batches: bool = True,
    ):
        super().__init__(root, cache_dir, num_proc, verify_cache, batch_size, num_workers,
                         max_hops, reference_compatible, cache_pairs, batch_by_size=batch_by_size,
                         max_atoms_per_batch=max_atoms_per_batch, dense_batches=dense_batches)
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), not {val_fraction}")
        self.val_fraction = val_fraction
        self.seed = seed
        self.dataset = PDBBindDataset(root, cutoff=cutoff, refined_index=refined_index, core_index=core_index,
                                      general_index=general_index, labels_csv=labels_csv,
                                      **self.dataset_options())

    def split_positions(self, cache: FeatureCache) -> dict[str, np.ndarray]:
        codes = [self.dataset.codes[r] for r in self.dataset.record_indices()]
        if self.dataset.assigned_split:
            given = np.asarray([self.dataset.assigned_split[c] for c in codes])
        else:
            given = np.where([c in self.dataset.core for c in codes], "test", "pool")
        if cache.failures:
            log.warning("%d PDBBind complexes skipped (see %s)", len(cache.failures),
                        cache.folder / self.failures_file)
        test = np.flatnonzero(given == "test")
        if "val" in given:
            return {"train": np.flatnonzero(given == "train"), "val": np.flatnonzero(given == "val"), "test": test}
        pool = np.flatnonzero(given != "test")  # a seeded share of it for validation
        n_val = int(round(len(pool) * self.val_fraction))
        order = np.random.default_rng(self.seed).permutation(len(pool))
        return {"train": np.sort(pool[order[n_val:]]), "val": np.sort(pool[order[:n_val]]), "test": test}

    def split_info(self) -> dict:
        return {"seed": self.seed, "val_fraction": self.val_fraction, "cutoff": self.dataset.cutoff,
                "labels_csv": str(self.dataset.labels_path) if self.dataset.labels_path else None}


__all__ = ["PDBBindDataModule", "PDBBindDataset", "PDBBIND_SOURCE", "featurize_complex",
           "find_complex_folders", "read_index", "read_labels_csv", "read_ligand", "read_pocket"]
