"""The featurisation cache: keys, reuse, corruption, interrupted builds, failures, workers,
compact molecules with the pair features computed on access."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from rdkit import Chem

from tmzoo.chem.molecule import MoleculeError, mol_to_data
from tmzoo.data.transforms import transformer_m_transform
from tmzoo.datamodules import QM9DataModule
from tmzoo.datamodules import cache as cache_module
from tmzoo.datamodules.readers import iter_sdf_blocks

RAW = Path(__file__).parent / "fixtures" / "qm9" / "raw"


def make(tmp_path, **kwargs):
    kwargs.setdefault("num_proc", 1)
    return QM9DataModule(str(RAW.parent), cache_dir=str(tmp_path / "cache"), **kwargs)


def count_builds(monkeypatch):
    calls = []
    original = cache_module.build_cache

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(cache_module, "build_cache", counting)
    return calls


def test_key_changes_with_cached_settings_only(tmp_path):
    base = make(tmp_path).cache_folder
    # the pair features are computed on access: the molecules cached do not depend on them
    assert make(tmp_path, max_hops=4).cache_folder == base
    assert make(tmp_path, reference_compatible=True).cache_folder == base
    assert make(tmp_path, targets=["mu", "u0"]).cache_folder == base  # y holds all 19 targets
    assert make(tmp_path, num_proc=2).cache_folder == base
    pairs = make(tmp_path, cache_pairs=True).cache_folder
    assert pairs != base
    assert make(tmp_path, cache_pairs=True, max_hops=4).cache_folder != pairs
    assert make(tmp_path, cache_pairs=True, reference_compatible=True).cache_folder != pairs


def test_changing_hops_or_path_mode_does_not_reread_the_raw_files(tmp_path, monkeypatch):
    make(tmp_path).load()
    calls = count_builds(monkeypatch)
    dm = make(tmp_path, max_hops=3, reference_compatible=True)
    monkeypatch.setattr(dm.dataset, "jobs", lambda: pytest.fail("the raw files were read again"))
    dm.setup("fit")
    assert not calls
    transform = transformer_m_transform(max_hops=3, reference_compatible=True)
    blocks = list(iter_sdf_blocks(RAW / "gdb9.sdf"))
    for item, record in zip(dm.splits["train"], dm.record_indices("train")):
        fresh = transform(mol_to_data(Chem.MolFromMolBlock(blocks[record], removeHs=False)))
        assert item.pair_path.shape[1] == 3
        assert torch.equal(item.pair_path, fresh.pair_path) and torch.equal(item.pair_spd, fresh.pair_spd)


def test_key_changes_with_source_files(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(RAW.parent, copy)
    dm = QM9DataModule(str(copy), cache_dir=str(tmp_path / "cache"), num_proc=1)
    before = dm.cache_folder
    with open(copy / "raw" / "gdb9.sdf.csv", "a") as handle:
        handle.write("\n")
    assert dm.cache_folder != before


def test_cache_reused_without_rebuilding(tmp_path, monkeypatch):
    calls = count_builds(monkeypatch)
    first = make(tmp_path)
    first.load()
    second = make(tmp_path, targets=["homo"])
    assert len(second.load()) == 21 and len(calls) == 1
    assert second.load().folder == first.load().folder


def test_stored_molecules_equal_fresh_featurisation(tmp_path):
    dm = make(tmp_path, max_hops=3)
    transform = transformer_m_transform(max_hops=3)
    for i, block in enumerate(iter_sdf_blocks(RAW / "gdb9.sdf")):
        fresh = transform(mol_to_data(Chem.MolFromMolBlock(block, removeHs=False)))
        stored = dm.access_transform()(dm.load().store[i])
        for key in fresh.keys():
            if isinstance(fresh[key], torch.Tensor):
                assert stored[key].dtype == fresh[key].dtype, key
                assert torch.equal(stored[key], fresh[key]), key
            else:
                assert stored[key] == fresh[key], key


def assert_same_graph(a, b):
    assert sorted(a.keys()) == sorted(b.keys())
    for key in a.keys():
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


@pytest.mark.parametrize("reference_compatible", [False, True])
def test_split_items_equal_those_of_the_cached_pairs_path(tmp_path, reference_compatible):
    """Compact molecules + transform on access give exactly the graphs of caching the pairs
    (the behaviour before the compact cache), attribute by attribute, dtypes included."""
    new = make(tmp_path, targets=["gap", "mu"], reference_compatible=reference_compatible, dense_batches=False)
    old = make(tmp_path, targets=["gap", "mu"], reference_compatible=reference_compatible, cache_pairs=True,
               dense_batches=False)
    new.setup("fit"), old.setup("fit")
    assert new.load().folder != old.load().folder
    assert "pair_path" in old.load().store.layout and "pair_path" not in new.load().store.layout
    for split in ("train", "val", "test"):
        assert len(new.splits[split]) == len(old.splits[split])
        for i in range(len(new.splits[split])):
            assert_same_graph(new.splits[split][i], old.splits[split][i])
    a, b = next(iter(new.train_dataloader())), next(iter(old.train_dataloader()))
    assert a.x.dtype == torch.long and a.edge_index.dtype == torch.long and a.idx.dtype == torch.long


def test_compact_dtypes_on_disk_model_dtypes_when_read(tmp_path):
    cache = make(tmp_path).load()
    layout = cache.store.layout
    assert {name: layout[name]["dtype"] for name in ("x", "edge_attr", "edge_index", "pos", "y")} == \
        {"x": "uint8", "edge_attr": "uint8", "edge_index": "int16", "pos": "float32", "y": "float32"}
    assert not {"pair_spd", "pair_path", "degree"} & set(layout)
    data = cache.store[0]
    assert data.x.dtype == data.edge_attr.dtype == data.edge_index.dtype == data.idx.dtype == torch.long
    assert data.pos.dtype == data.y.dtype == torch.float32 and data.has_pos.dtype == torch.bool
    assert cache.manifest["bytes_per_molecule"] < 1500


def test_values_that_do_not_fit_the_compact_dtype_fail_their_record(tmp_path):
    from tmzoo.chem.molecule import smiles_to_data

    def featurize(smiles):
        data = smiles_to_data(smiles)
        if smiles == "CCN":
            data.x[0, 0] = 300  # does not fit a byte: refused, not wrapped around
        return data

    built = cache_module.build_cache(tmp_path / "c", [(0, "a", "CCO"), (1, "b", "CCN"), (2, "c", "C")],
                                     featurize)
    assert len(built) == 2 and [f.index for f in built.failures] == [1]
    assert "outside the uint8" in built.failures[0].error


def test_num_nodes_per_item_from_the_offsets(tmp_path):
    dm = make(tmp_path)
    dm.setup("fit")
    for split in ("train", "val", "test"):
        view = dm.splits[split]
        counts = view.num_nodes_per_item
        assert counts.dtype == np.int64 and len(counts) == len(view)
        assert counts.tolist() == [view[i].num_nodes for i in range(len(view))]


def test_building_in_process_keeps_the_torch_threads(tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        make(tmp_path, num_proc=1).load()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_corrupted_cache_is_rebuilt(tmp_path, monkeypatch, damage):
    folder = make(tmp_path).load().folder
    target = folder / "pos.bin"
    if damage == "truncate":
        os.truncate(target, target.stat().st_size - 7)
    elif damage == "flip":
        raw = bytearray(target.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        target.write_bytes(bytes(raw))
    else:
        (folder / "manifest.json").write_text("{not json")
    assert cache_module.load_cache(folder) is None
    calls = count_builds(monkeypatch)
    rebuilt = make(tmp_path).load()
    assert len(calls) == 1 and len(rebuilt) == 21
    assert cache_module.load_cache(folder) is not None


def _interrupting(payload, after=[0]):  # noqa: B006 - counts calls within one process
    after[0] += 1
    if after[0] == 10:
        raise KeyboardInterrupt
    block, _ = payload
    return mol_to_data(Chem.MolFromMolBlock(block, removeHs=False))


def test_interrupted_build_leaves_no_valid_looking_cache(tmp_path, monkeypatch):
    dm = make(tmp_path)
    monkeypatch.setattr(dm.dataset, "featurizer", lambda: _interrupting)
    with pytest.raises(KeyboardInterrupt):
        dm.load()
    parent = tmp_path / "cache"
    assert not dm.cache_folder.exists()
    assert not [p for p in parent.iterdir() if p.is_dir()]  # temporary folder removed too
    monkeypatch.undo()
    assert len(make(tmp_path).load()) == 21


def test_half_written_folder_without_manifest_is_rebuilt(tmp_path):
    dm = make(tmp_path)
    folder = dm.cache_folder
    folder.mkdir(parents=True)
    (folder / "x.bin").write_bytes(b"\0" * 100)  # e.g. copied half-way, no manifest
    assert cache_module.load_cache(folder) is None
    assert len(dm.load()) == 21 and (folder / "manifest.json").is_file()


def test_failures_listed_not_dropped_silently(tmp_path, capsys):
    raw = tmp_path / "bad" / "raw"
    shutil.copytree(RAW, raw)
    blocks = list(iter_sdf_blocks(RAW / "gdb9.sdf"))
    lines = blocks[3].split("\n")  # gdb_4, acetylene: make its first carbon pentavalent
    counts = lines[3]
    bonds = int(counts[3:6])
    lines[3] = f"{counts[:3]}{bonds + 1:3d}{counts[6:]}"
    lines.insert(4 + int(counts[:3]) + bonds, "  1  3  2  0")
    blocks[3] = "\n".join(lines)
    (raw / "gdb9.sdf").write_text("".join(f"{b}$$$$\n" for b in blocks))
    dm = QM9DataModule(str(raw.parent), cache_dir=str(tmp_path / "cache"), num_proc=1)
    cache = dm.load()
    assert len(cache) == 20
    assert [(f.index, f.name) for f in cache.failures] == [(3, "gdb_4")]
    assert "sanitise" in cache.failures[0].error
    listed = (cache.folder / "failures.csv").read_text().splitlines()
    assert listed[0] == "index,name,error" and listed[1].startswith("3,gdb_4,")
    assert "1 failed" in capsys.readouterr().err
    assert 3 not in dm.record_indices("train").tolist() + dm.record_indices("val").tolist() \
        + dm.record_indices("test").tolist()


def test_parallel_workers_give_the_same_store(tmp_path):
    serial = make(tmp_path / "serial").load()
    parallel = make(tmp_path / "parallel", num_proc=2).load()
    assert parallel.manifest["num_proc"] == 2
    for name, entry in serial.manifest["files"].items():
        assert parallel.manifest["files"][name]["blake2b"] == entry["blake2b"], name


def test_manifest_reports_rate_and_settings(tmp_path):
    folder = make(tmp_path).load().folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["count"] == 21 and manifest["molecules_per_second"] > 0
    assert manifest["bytes_per_molecule"] > 0 and "transform" not in manifest["settings"]
    folder = make(tmp_path, cache_pairs=True).load().folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "AddShortestPaths(max_hops=5" in manifest["settings"]["transform"]


def test_lazy_store_survives_pickling(tmp_path):
    import pickle

    store = make(tmp_path).load().store
    first = store[0]
    clone = pickle.loads(pickle.dumps(store))
    assert clone._maps is None and torch.equal(clone[0].x, first.x)


def test_user_cache_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TMZOO_CACHE", str(tmp_path / "mine"))
    assert cache_module.user_cache_dir() == tmp_path / "mine"


def test_read_only_root_caches_in_user_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TMZOO_CACHE", str(tmp_path / "user"))
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    dm = QM9DataModule(str(RAW.parent), num_proc=1)
    assert dm.cache_folder.parent == tmp_path / "user"


def test_featurizer_molecule_error_message_kept(tmp_path):
    from tmzoo.chem.molecule import smiles_to_data

    def broken(payload):
        if payload is None:
            raise MoleculeError("no atoms, for testing")
        return smiles_to_data(payload)

    jobs = [(7, "seven", None), (8, "eight", "CCO")]
    built = cache_module.build_cache(tmp_path / "c", jobs, broken, total=2)
    assert len(built) == 1 and built.failures[0].error == "no atoms, for testing"
    assert built.failures[0].index == 7


def test_a_build_where_every_record_fails_is_an_error_not_an_empty_cache(tmp_path):
    def broken(payload):
        raise MoleculeError("no atoms, for testing")

    with pytest.raises(cache_module.EmptyCacheError, match=r"none of the 2 records.*record 7 \(seven\): no atoms"):
        cache_module.load_or_build(tmp_path / "c", lambda: [(7, "seven", None), (8, "", None)], broken)
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]


def test_leftovers_of_a_killed_build_are_removed(tmp_path):
    dm = make(tmp_path)
    stale = dm.cache_folder.parent / f".{dm.cache_folder.name}.tmp-99999-abcdef"
    stale.mkdir(parents=True)
    (stale / "x.bin").write_bytes(b"\0" * 10)
    assert len(dm.load()) == 21 and not stale.exists()


def test_key_changes_with_the_featurisation_code(tmp_path, monkeypatch):
    from tmzoo.datamodules import datasets

    before, pairs = make(tmp_path).cache_folder, make(tmp_path, cache_pairs=True).cache_folder
    monkeypatch.setattr(datasets, "PAIR_MODULES", ("tmzoo.chem.paths",))  # e.g. transforms edited
    assert make(tmp_path).cache_folder == before and make(tmp_path, cache_pairs=True).cache_folder != pairs
    monkeypatch.setattr(datasets, "FEATURISATION_MODULES", ("tmzoo.chem.paths",))
    assert make(tmp_path).cache_folder != before
