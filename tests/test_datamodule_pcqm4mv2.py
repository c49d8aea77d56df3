"""PCQM4Mv2DataModule on the 20-molecule fixture: SDF join, splits, protocol, submission."""

import gzip
import io
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from rdkit import Chem

from tmzoo.datamodules import PCQM4Mv2DataModule
from tmzoo.datamodules.cache import RecordMismatchError
from tmzoo.datamodules.download import download_pcqm4mv2, extract
from tmzoo.datamodules.pcqm4mv2 import read_split_dict
from tmzoo.datamodules.readers import iter_sdf_blocks

ROOT = Path(__file__).parent / "fixtures" / "pcqm4mv2"
SDF = ROOT / "pcqm4m-v2-train.sdf"
TABLE = pd.read_csv(ROOT / "pcqm4m-v2" / "raw" / "data.csv.gz")


def make(tmp_path, root=ROOT, **kwargs):
    kwargs.setdefault("num_proc", 1)
    return PCQM4Mv2DataModule(str(root), cache_dir=str(tmp_path / "cache"), **kwargs)


def copy_root(tmp_path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(ROOT, root)
    return root


def test_counts_splits_and_labels(tmp_path):
    dm = make(tmp_path)
    dm.setup("fit")
    assert len(dm.load()) == 20 and not dm.load().failures
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 12, "val": 4, "test": 2, "predict": 2}
    assert dm.record_indices("val").tolist() == [12, 13, 14, 15]
    assert dm.record_indices("test").tolist() == [16, 17]
    for i in range(20):
        data = dm.load().store[i]
        assert data.y.shape == (1, 1) and data.y.item() == pytest.approx(TABLE.homolumogap[i], rel=1e-6)
    assert dm.target_names == ["homolumogap"] and dm.target_units == ["eV"]
    assert dm.target_mean[0] == pytest.approx(TABLE.homolumogap[:12].mean(), rel=1e-5)


def test_train_graphs_and_coordinates_from_sdf_others_from_smiles(tmp_path):
    dm = make(tmp_path)
    store = dm.load().store
    for i, block in enumerate(iter_sdf_blocks(SDF)):
        mol = Chem.MolFromMolBlock(block)
        data = store[i]
        assert bool(data.has_pos) and data.num_nodes == mol.GetNumAtoms()
        assert torch.allclose(data.pos, torch.tensor(mol.GetConformer().GetPositions()).float())
    for i in range(12, 20):
        mol = Chem.MolFromSmiles(TABLE.smiles[i])
        assert not bool(store[i].has_pos) and store[i].num_nodes == mol.GetNumAtoms()


def test_validation_and_test_are_2d_only(tmp_path):
    dm = make(tmp_path)
    dm.setup("fit")
    for split in ("val", "test", "predict"):
        assert all(not bool(d.has_pos) and not d.pos.any() for d in dm.splits[split])
    assert all(bool(d.has_pos) for d in dm.splits["train"])
    batch = next(iter(dm.val_dataloader()))
    assert batch.y.shape == (4, 1) and sorted(batch.idx.tolist()) == [12, 13, 14, 15]


def test_sdf_with_a_deleted_record_is_refused_with_its_index(tmp_path):
    root = copy_root(tmp_path)
    blocks = list(iter_sdf_blocks(SDF))
    del blocks[5]  # record 5 is C12ClNO; record 6 (C9O6) now sits at index 5
    (root / "pcqm4m-v2-train.sdf").write_text("".join(f"{b}$$$$\n" for b in blocks))
    with pytest.raises(RecordMismatchError, match=r"11 records .* 12 molecules.*SDF record 5 is C9O6"):
        make(tmp_path, root=root).load()
    assert not list((tmp_path / "cache").glob("tmzoo-*"))


def test_swapped_records_are_refused_with_the_first_index(tmp_path):
    root = copy_root(tmp_path)
    blocks = list(iter_sdf_blocks(SDF))
    blocks[7], blocks[9] = blocks[9], blocks[7]  # same count, records out of step
    (root / "pcqm4m-v2-train.sdf").write_text("".join(f"{b}$$$$\n" for b in blocks))
    with pytest.raises(RecordMismatchError, match=r"record 7: the SDF molecule is C8N5OS"):
        make(tmp_path, root=root).load()


def test_gzipped_sdf_and_missing_labels(tmp_path):
    root = copy_root(tmp_path)
    with open(root / "pcqm4m-v2-train.sdf", "rb") as src, gzip.open(root / "pcqm4m-v2-train.sdf.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    (root / "pcqm4m-v2-train.sdf").unlink()
    table = TABLE.copy()
    table.loc[16:, "homolumogap"] = np.nan  # test molecules have no labels in the release
    table.to_csv(root / "pcqm4m-v2" / "raw" / "data.csv.gz", index=False)
    dm = make(tmp_path, root=root)
    dm.setup("test")
    assert dm.has_coordinates and len(dm.load()) == 20
    assert torch.isnan(dm.splits["test"][0].y).all()
    assert not np.isnan(dm.target_mean[0])


def test_write_test_submission_orders_by_split(tmp_path):
    dm = make(tmp_path)
    dm.setup("test")
    path = dm.write_test_submission(torch.tensor([[2.0], [1.0]]), tmp_path / "sub", idx=torch.tensor([17, 16]))
    assert path.name == "y_pred_pcqm4m-v2_test-dev.npz"
    assert np.load(path)["y_pred"].tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="no prediction, first record 17"):
        dm.write_test_submission(torch.tensor([1.0]), tmp_path / "sub", idx=[16])
    with pytest.raises(ValueError, match="not in the test-dev split"):
        dm.write_test_submission(torch.tensor([1.0, 2.0]), tmp_path / "sub", idx=[16, 3])


def test_split_dict_with_numpy_arrays(tmp_path):
    path = tmp_path / "split_dict.pt"
    torch.save({k: np.asarray(v) for k, v in read_split_dict(ROOT / "pcqm4m-v2" / "split_dict.pt").items()}, path)
    split = read_split_dict(path)
    assert split["train"].tolist() == list(range(12)) and split["test-challenge"].tolist() == [18, 19]


def test_download_and_extract_from_local_files(tmp_path):
    source = tmp_path / "server"
    source.mkdir()
    with zipfile.ZipFile(source / "pcqm4m-v2.zip", "w") as zipped:
        for path in (ROOT / "pcqm4m-v2").rglob("*"):
            if path.is_file():
                zipped.write(path, f"pcqm4m-v2/{path.relative_to(ROOT / 'pcqm4m-v2')}")
    with tarfile.open(source / "pcqm4m-v2-train.sdf.tar.gz", "w:gz") as tar:
        tar.add(SDF, "pcqm4m-v2-train.sdf")
    root = tmp_path / "downloaded"
    download_pcqm4mv2(root, url=(source / "pcqm4m-v2.zip").as_uri(),
                      sdf_url=(source / "pcqm4m-v2-train.sdf.tar.gz").as_uri())
    assert (root / "pcqm4m-v2" / "raw" / "data.csv.gz").read_bytes() == \
        (ROOT / "pcqm4m-v2" / "raw" / "data.csv.gz").read_bytes()
    assert (root / "pcqm4m-v2-train.sdf").read_bytes() == SDF.read_bytes()
    assert not list(root.glob("*.zip")) and not list(root.glob("*.tar.gz"))
    assert len(make(tmp_path, root=root).load()) == 20


def test_extract_refuses_paths_outside_the_folder(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(ValueError, match="outside"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_missing_files_name_the_download_helper(tmp_path):
    with pytest.raises(FileNotFoundError, match="download_pcqm4mv2"):
        make(tmp_path, root=tmp_path)


def test_official_size_submission_goes_through_the_ogb_evaluator(tmp_path, monkeypatch):
    from ogb.lsc import PCQM4Mv2Evaluator

    from tmzoo.datamodules import pcqm4mv2

    calls = []
    monkeypatch.setattr(pcqm4mv2, "OFFICIAL_TEST_SIZES", {"test-dev": 2})
    monkeypatch.setattr(PCQM4Mv2Evaluator, "save_test_submission",
                        lambda self, d, folder, mode: calls.append((d["y_pred"].tolist(), folder, mode)))
    dm = make(tmp_path)
    dm.setup("test")
    dm.write_test_submission(torch.tensor([0.5, 1.5]), tmp_path / "sub")  # test loader order
    assert calls == [([0.5, 1.5], str(tmp_path / "sub"), "test-dev")]


def test_split_items_equal_those_of_the_cached_pairs_path(tmp_path):
    """Compact molecules + transform on access = the graphs of caching the pair features."""
    new, old = make(tmp_path), make(tmp_path, cache_pairs=True)
    new.setup("fit"), old.setup("fit")
    for split in ("train", "val", "test", "predict"):
        assert len(new.splits[split]) == len(old.splits[split])
        for a, b in zip(new.splits[split], old.splits[split]):
            assert sorted(a.keys()) == sorted(b.keys())
            for key in a.keys():
                if isinstance(a[key], torch.Tensor):
                    assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), (split, key)
                else:
                    assert a[key] == b[key], (split, key)
    assert new.load().manifest["bytes_per_molecule"] < 1500
