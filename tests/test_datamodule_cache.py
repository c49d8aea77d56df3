"""The featurisation cache: keys, reuse, corruption, interrupted builds, failures, workers."""

import json
import os
import shutil
from pathlib import Path

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


def test_key_changes_with_settings_not_with_targets(tmp_path):
    base = make(tmp_path).cache_folder
    assert make(tmp_path, max_hops=4).cache_folder != base
    assert make(tmp_path, reference_compatible=True).cache_folder != base
    assert make(tmp_path, targets=["mu", "u0"]).cache_folder == base  # y holds all 19 targets
    assert make(tmp_path, num_proc=2).cache_folder == base


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
        stored = dm.load().store[i]
        for key in ("x", "edge_index", "edge_attr", "pos", "has_pos", "pair_spd", "pair_path",
                    "degree", "pair_type"):
            assert stored[key].dtype == fresh[key].dtype, key
            assert torch.equal(stored[key], fresh[key]), key


@pytest.mark.parametrize("damage", ["truncate", "flip", "manifest"])
def test_corrupted_cache_is_rebuilt(tmp_path, monkeypatch, damage):
    folder = make(tmp_path).load().folder
    target = folder / "pair_path.bin"
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
    monkeypatch.setattr(dm, "featurizer", lambda: _interrupting)
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
    assert "sanitise" in cache.failures[0].reason
    listed = (cache.folder / "failures.csv").read_text().splitlines()
    assert listed[0] == "index,name,reason" and listed[1].startswith("3,gdb_4,")
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
    def broken(payload):
        raise MoleculeError("no atoms, for testing")

    jobs = [(7, "seven", None)]
    built = cache_module.build_cache(tmp_path / "c", jobs, broken, total=1)
    assert len(built) == 0 and built.failures[0].reason == "no atoms, for testing"
    assert built.failures[0].index == 7


def test_leftovers_of_a_killed_build_are_removed(tmp_path):
    dm = make(tmp_path)
    stale = dm.cache_folder.parent / f".{dm.cache_folder.name}.tmp-99999-abcdef"
    stale.mkdir(parents=True)
    (stale / "x.bin").write_bytes(b"\0" * 10)
    assert len(dm.load()) == 21 and not stale.exists()


def test_key_changes_with_the_featurisation_code(tmp_path, monkeypatch):
    from tmzoo.datamodules import featurized

    before = make(tmp_path).cache_folder
    monkeypatch.setattr(featurized, "FEATURISATION_MODULES", ("tmzoo.chem.molecule",))
    assert make(tmp_path).cache_folder != before
