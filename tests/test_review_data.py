"""Review of the data path: problems found by an adversarial reading, each reproduced here."""

from __future__ import annotations

import tarfile
import zipfile

import numpy as np
import pytest
import torch

from tmzoo.chem.molecule import smiles_to_data
from tmzoo.data.batching import SizeBatchSampler
from tmzoo.data.dense import collate_dense
from tmzoo.data.resumable import ResumableDataLoader
from tmzoo.data.transforms import transformer_m_transform
from tmzoo.datamodules import download as download_module


# ------------------------------------------------------------------ collate_dense
def _molecule(smiles: str, weight: float):
    data = transformer_m_transform()(smiles_to_data(smiles))
    data.weight = torch.tensor([weight])  # a per-molecule attribute of one value
    return data


def test_a_per_molecule_attribute_does_not_depend_on_a_one_atom_first_molecule():
    one_atom, three_atoms = _molecule("C", 2.0), _molecule("CCO", 3.0)
    for batch in ([one_atom, three_atoms], [three_atoms, one_atom]):
        dense = collate_dense(batch)
        assert dense.extra["weight"].tolist() == [d.weight.item() for d in batch]


# ------------------------------------------------------------------ distributed order
def test_ranks_agree_on_the_order_whatever_each_process_seeded(monkeypatch):
    """Under DDP every rank builds its own loader; without a common ``seed_everything`` each
    process has another ``torch.initial_seed()``, and the ranks must still deal one order."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)
    sizes = np.random.default_rng(0).integers(1, 30, size=101)
    dataset = list(range(len(sizes)))
    seen = []
    for rank, process_seed in ((0, 11), (1, 12345)):
        torch.manual_seed(process_seed)
        sampler = SizeBatchSampler(dataset, 8, sizes=sizes, num_replicas=2, rank=rank)
        loader = ResumableDataLoader(dataset, batch_sampler=sampler, collate_fn=lambda b: b)
        seen += [i for batch in loader for i in batch]
    assert set(seen) == set(range(len(sizes)))


# ------------------------------------------------------------------ archives
def _zip_with_a_damaged_second_member(path):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zipped:
        zipped.writestr("gdb9.sdf", "first member\n" * 100)
        zipped.writestr("gdb9.sdf.csv", "second member\n" * 100)
    raw = bytearray(path.read_bytes())
    at = raw.index(b"second member")
    raw[at: at + 6] = b"XXXXXX"  # CRC mismatch, found while extracting
    path.write_bytes(bytes(raw))


def test_a_failed_extraction_leaves_no_partial_member(tmp_path):
    archive, folder = tmp_path / "qm9.zip", tmp_path / "raw"
    _zip_with_a_damaged_second_member(archive)
    folder.mkdir()
    with pytest.raises(Exception):
        download_module.extract(archive, folder)
    assert sorted(p.name for p in folder.iterdir()) == []


def test_a_tar_with_a_device_or_fifo_is_refused(tmp_path):
    archive = tmp_path / "bad.tar"
    with tarfile.open(archive, "w") as tar:
        fifo = tarfile.TarInfo("pipe")
        fifo.type = tarfile.FIFOTYPE
        tar.addfile(fifo)
    with pytest.raises(ValueError, match="pipe"):
        download_module.extract(archive, tmp_path / "out")


def test_extraction_merges_into_an_existing_folder(tmp_path):
    archive, folder = tmp_path / "a.zip", tmp_path / "root"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("pcqm4m-v2/raw/data.csv.gz", b"new")
    (folder / "pcqm4m-v2" / "processed").mkdir(parents=True)
    (folder / "pcqm4m-v2" / "processed" / "keep").write_text("kept")
    assert download_module.extract(archive, folder) == ["pcqm4m-v2/raw/data.csv.gz"]
    assert (folder / "pcqm4m-v2" / "raw" / "data.csv.gz").read_bytes() == b"new"
    assert (folder / "pcqm4m-v2" / "processed" / "keep").read_text() == "kept"
    assert [p.name for p in folder.iterdir()] == ["pcqm4m-v2"]  # no temporary left


# ------------------------------------------------------------------ sizes of a store
def test_a_graph_store_gives_its_sizes_to_the_batch_sampler(tmp_path):
    from tmzoo.datamodules.storage import GraphStore, GraphWriter, encode

    molecules = [smiles_to_data(s) for s in ("C", "CCO", "c1ccccc1")]
    writer = GraphWriter(tmp_path)
    for data in molecules:
        writer.append(encode(data))
    writer.close()
    store = GraphStore(tmp_path, writer.layout, writer.count)
    sampler = SizeBatchSampler(store, batch_size=2, shuffle=False)
    assert sampler.sizes.tolist() == [1, 3, 6]
    assert sorted(i for batch in sampler for i in batch) == [0, 1, 2]


# ------------------------------------------------------------------ resumable loader
def test_a_restored_position_is_saved_again_before_the_loader_runs():
    """E.g. a checkpoint written on an exception between restoring and the first batch."""
    dataset = list(range(40))
    loader = ResumableDataLoader(dataset, batch_size=4, shuffle=True, seed=3, collate_fn=lambda b: b)
    batches = iter(loader)
    for _ in range(3):
        next(batches)
    state = loader.state_dict()
    assert state["consumed"] == 3
    restored = ResumableDataLoader(dataset, batch_size=4, shuffle=True, seed=0, collate_fn=lambda b: b)
    restored.load_state_dict(state)
    assert restored.state_dict() == state
    rest = [b for b in restored]
    assert rest == [b for b in batches] and restored.state_dict()["consumed"] == 0
