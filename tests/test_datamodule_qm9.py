"""QM9DataModule on the 21-molecule fixture: labels, units, hydrogens, splits, skips."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem

from tmzoo.datamodules import QM9DataModule
from tmzoo.datamodules.cache import RecordMismatchError
from tmzoo.datamodules.demo import demo_root
from tmzoo.datamodules.readers import iter_sdf_blocks

RAW = Path(__file__).parent / "fixtures" / "qm9" / "raw"
HARTREE_EV = 27.211386246  # PyG's HAR2EV
CSV = pd.read_csv(RAW / "gdb9.sdf.csv").set_index("mol_id")


def make(tmp_path, root=RAW.parent, **kwargs):
    kwargs.setdefault("num_proc", 1)
    return QM9DataModule(str(root), cache_dir=str(tmp_path / "cache"), **kwargs)


def by_name(dm, name):
    """The molecule ``name`` as the model gets it (cached molecule + transform)."""
    store = dm.load().store
    return dm.access_transform()(next(store[i] for i in range(len(store)) if store[i].name == name))


def test_counts_and_methane_labels_in_ev(tmp_path):
    dm = make(tmp_path, targets=["gap", "u0", "mu", "alpha", "cv", "homo"])
    assert len(dm.load()) == 21 and not dm.load().failures and dm.skipped == 0
    dm.setup("fit")
    methane = by_name(dm, "gdb_1")
    y = methane.y[:, dm.target_columns()]
    expected = [0.5048 * HARTREE_EV, -40.47893 * HARTREE_EV, 0.0, 13.21, 6.469, -0.3877 * HARTREE_EV]
    assert torch.allclose(y[0], torch.tensor(expected), rtol=1e-6, atol=1e-4)
    assert dm.target_units == ["eV", "eV", "D", "a0^3", "cal/(mol K)", "eV"]
    assert dm.target_names == ["gap", "u0", "mu", "alpha", "cv", "homo"]


def test_hydrogens_and_coordinates_from_sdf(tmp_path):
    dm = make(tmp_path)
    block = next(iter_sdf_blocks(RAW / "gdb9.sdf"))
    mol = Chem.MolFromMolBlock(block, removeHs=False)
    methane = by_name(dm, "gdb_1")
    assert methane.num_nodes == 5 and (methane.x[:, 0] + 1).tolist() == [6, 1, 1, 1, 1]
    assert torch.allclose(methane.pos, torch.tensor(mol.GetConformer().GetPositions()).float())
    assert bool(methane.has_pos) and methane.pair_spd.shape == (25,)
    # every molecule keeps all the atoms of its SDF record
    for i, block in enumerate(iter_sdf_blocks(RAW / "gdb9.sdf")):
        atoms = Chem.MolFromMolBlock(block, removeHs=False).GetNumAtoms()
        assert dm.load().store[i].num_nodes == atoms


def test_split_sizes_seed_and_statistics(tmp_path):
    dm = make(tmp_path, targets="gap", seed=3, dense_batches=False)
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 17, "val": 2, "test": 2}
    train = dm.record_indices("train")
    assert len(set(train) | set(dm.record_indices("val")) | set(dm.record_indices("test"))) == 21
    gaps = CSV["gap"].to_numpy() * HARTREE_EV  # record i is CSV row i in the fixture
    assert dm.target_mean[0] == pytest.approx(gaps[train].mean(), rel=1e-5)
    assert dm.target_std[0] == pytest.approx(gaps[train].std(ddof=1), rel=1e-4)
    again = make(tmp_path, seed=3)
    other = make(tmp_path, seed=4)
    assert np.array_equal(again.record_indices("train"), train)
    assert not np.array_equal(other.record_indices("train"), train)
    batch = next(iter(dm.train_dataloader()))
    assert batch.y.shape == (17, 1) and batch.pos.shape == (batch.num_nodes, 3)


def test_split_saved_and_reused(tmp_path):
    dm = make(tmp_path, seed=1)
    path = dm.save_split(tmp_path / "run")
    saved = json.loads(path.read_text())
    assert saved["seed"] == 1 and sorted(saved["train"]) == sorted(dm.record_indices("train"))
    assert list((dm.load().folder / "splits").glob("seed-1-*.json"))
    reused = make(tmp_path, seed=99, split_file=str(path))
    for split in ("train", "val", "test"):
        assert np.array_equal(np.sort(reused.record_indices(split)), np.sort(saved[split]))


def test_paper_split_sizes_when_large():
    from tmzoo.datamodules.splits import split_sizes

    assert split_sizes(130_831) == (110_000, 10_000, 10_831)
    assert split_sizes(127_831) == (107_000, 10_000, 10_831)
    assert split_sizes(5_000) == (4_204, 382, 414)


def _subset(tmp_path, names, uncharacterized_numbers, gz=False):
    raw = tmp_path / "subset" / "raw"
    raw.mkdir(parents=True)
    blocks = [b for b in iter_sdf_blocks(RAW / "gdb9.sdf") if b.split("\n", 1)[0] in names]
    sdf = "".join(f"{b}$$$$\n" for b in blocks)
    table = CSV.loc[names].reset_index().to_csv(index=False)
    lines = (RAW / "uncharacterized.txt").read_text().splitlines()
    listed = [f"{n:8d}   C   C   C   0.1" for n in uncharacterized_numbers]
    unchar = "\n".join(lines[:9] + listed + lines[-2:]) + "\n"
    for name, text in (("gdb9.sdf", sdf), ("gdb9.sdf.csv", table), ("uncharacterized.txt", unchar)):
        if gz:
            with gzip.open(raw / f"{name}.gz", "wt") as handle:
                handle.write(text)
        else:
            (raw / name).write_text(text)
    return raw.parent


def test_uncharacterized_skipped_by_molecule_number(tmp_path):
    # a subset: PyG's positional reading would skip and label the wrong molecules here
    root = _subset(tmp_path, ["gdb_2", "gdb_5", "gdb_9", "gdb_12"], [5, 12])
    dm = make(tmp_path, root=root, targets="gap")
    names = [dm.load().store[i].name for i in range(len(dm.load()))]
    assert names == ["gdb_2", "gdb_9"] and dm.skipped == 2
    for i, name in enumerate(names):
        assert dm.load().store[i].y[0, 4].item() == pytest.approx(CSV.loc[name, "gap"] * HARTREE_EV)


def test_gzipped_raw_files_read_transparently(tmp_path):
    names = [f"gdb_{i}" for i in range(1, 8)]
    plain = make(tmp_path / "a", root=_subset(tmp_path / "a", names, []))
    zipped = make(tmp_path / "b", root=_subset(tmp_path / "b", names, [], gz=True))
    assert plain.cache_folder.name != zipped.cache_folder.name  # different source files
    for i in range(7):
        a, b = plain.load().store[i], zipped.load().store[i]
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and torch.equal(a.pos, b.pos)


def test_sdf_record_without_csv_row_stops(tmp_path):
    root = _subset(tmp_path, ["gdb_1", "gdb_2", "gdb_3"], [])
    table = pd.read_csv(root / "raw" / "gdb9.sdf.csv")
    table[table.mol_id != "gdb_2"].to_csv(root / "raw" / "gdb9.sdf.csv", index=False)
    with pytest.raises(RecordMismatchError, match=r"SDF record 1 \(gdb_2\) has no row"):
        make(tmp_path, root=root).load()
    assert not list((tmp_path / "cache").glob("tmzoo-*"))


def test_unknown_target_and_missing_files(tmp_path):
    with pytest.raises(ValueError, match="unknown QM9 target"):
        make(tmp_path, targets=["gapp"])
    with pytest.raises(FileNotFoundError, match="gdb9.sdf"):
        make(tmp_path, root=tmp_path)


def test_root_may_be_the_raw_folder(tmp_path):
    copy = tmp_path / "flat"
    shutil.copytree(RAW, copy)
    assert len(make(tmp_path, root=copy).load()) == 21


def test_uncharacterized_list_read_between_the_rules():
    from tmzoo.datamodules.qm9 import read_uncharacterized

    excerpt = RAW.parent / "uncharacterized_official_excerpt.txt"
    assert read_uncharacterized(excerpt) == {58, 61, 80, 185, 186}
    # the placeholder's prose mentions "3054 'uncharacterized' molecules": not a molecule number
    assert read_uncharacterized(RAW / "uncharacterized.txt") == set()
    assert read_uncharacterized(demo_root("qm9") / "raw" / "uncharacterized.txt") == set()


def test_setup_with_a_trainer_saves_the_split_in_its_log_dir(tmp_path):
    from types import SimpleNamespace

    dm = make(tmp_path, seed=5)
    dm.trainer = SimpleNamespace(is_global_zero=True, log_dir=str(tmp_path / "logs" / "version_0"))
    dm.setup("fit")
    saved = json.loads((tmp_path / "logs" / "version_0" / "split.json").read_text())
    assert saved["seed"] == 5 and saved["targets"] == ["gap"]
    assert sorted(saved["test"]) == sorted(dm.record_indices("test").tolist())


def test_a_string_in_a_label_column_names_the_file_and_row(tmp_path):
    root = _subset(tmp_path, ["gdb_1", "gdb_2", "gdb_3"], [])
    table = pd.read_csv(root / "raw" / "gdb9.sdf.csv", dtype=str)
    table.loc[1, "mu"] = "1.5 D"
    table.to_csv(root / "raw" / "gdb9.sdf.csv", index=False)
    with pytest.raises(ValueError, match=r"gdb9.sdf.csv, row 2 \(line 3, gdb_2\): mu is '1.5 D', not a number"):
        make(tmp_path, root=root).load()


def test_a_null_split_size_takes_the_rest():
    from tmzoo.datamodules.splits import fill_sizes, random_split

    assert fill_sizes([30, 5, None], 100) == (30, 5, 65)
    assert fill_sizes([None, 5, 10], 100) == (85, 5, 10)
    parts = random_split(21, [10, 5, None], seed=0)
    assert [len(parts[k]) for k in ("train", "val", "test")] == [10, 5, 6]
    with pytest.raises(ValueError, match="more than the 21"):
        fill_sizes([20, 5, None], 21)
    with pytest.raises(ValueError, match="at most one null"):
        fill_sizes([None, None, 5], 21)
