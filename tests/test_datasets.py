"""The PyG datasets without Lightning: items, the datamodules' items, download with checksums."""

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from torch_geometric.loader import DataLoader

from tmzoo.data.transforms import transformer_m_transform
from tmzoo.datamodules import (
    QM9_TARGETS,
    PCQM4Mv2DataModule,
    PCQM4Mv2Dataset,
    PDBBindDataset,
    QM9DataModule,
    QM9Dataset,
)
from tmzoo.datamodules import cache as cache_module
from tmzoo.datamodules.base import molecule_loader
from tmzoo.datamodules.splits import SplitView
from tmzoo.datamodules import download as download_module

FIXTURES = Path(__file__).parent / "fixtures"
QM9_RAW = FIXTURES / "qm9" / "raw"


def assert_same_graph(a, b):
    assert sorted(a.keys()) == sorted(b.keys())
    for key in a.keys():
        if isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key
        else:
            assert a[key] == b[key], key


def qm9(tmp_path, root=QM9_RAW.parent, **kwargs):
    kwargs.setdefault("num_proc", 1)
    return QM9Dataset(root, cache_dir=tmp_path / "cache", **kwargs)


def test_qm9_dataset_items_equal_the_datamodules(tmp_path):
    dataset = qm9(tmp_path, transform=transformer_m_transform())
    assert len(dataset) == 21 and not dataset.failures and dataset.skipped == 0
    assert dataset[0].y.shape == (1, 19) and dataset[0].name == "gdb_1"
    dm = QM9DataModule(str(QM9_RAW.parent), targets=QM9_TARGETS, cache_dir=str(tmp_path / "cache"), num_proc=1)
    assert dm.cache_folder == Path(dataset.processed_dir)  # one cache for both
    dm.setup("fit")
    for split in ("train", "val", "test"):
        for item, position in zip(dm.splits[split], dm.positions[split]):
            assert_same_graph(item, dataset[int(position)])
    assert dataset.record_indices().tolist() == list(range(21))
    assert dataset.num_nodes_per_item.tolist() == [d.num_nodes for d in dataset]
    assert SplitView(dataset, [4, 2]).num_nodes_per_item.tolist() == [dataset[4].num_nodes, dataset[2].num_nodes]


def test_a_dataset_feeds_pyg_loaders_and_subsets(tmp_path):
    dataset = qm9(tmp_path, transform=transformer_m_transform())
    batch = next(iter(DataLoader(dataset, batch_size=8)))
    assert batch.num_graphs == 8 and batch.y.shape == (8, 19) and batch.pair_spd.dtype == torch.int16
    subset = dataset[5:9]
    assert len(subset) == 4 and [d.name for d in subset] == [f"gdb_{i}" for i in range(6, 10)]
    assert subset.record_indices().tolist() == [5, 6, 7, 8]
    assert subset.num_nodes_per_item.tolist() == [d.num_nodes for d in subset]
    batches = list(molecule_loader(dataset, batch_size=4, batch_by_size=True, dense_batches=False))
    assert sorted(int(i) for b in batches for i in b.idx) == list(range(21))


def test_changing_the_transform_does_not_reread_the_raw_files(tmp_path, monkeypatch):
    qm9(tmp_path)
    monkeypatch.setattr(QM9Dataset, "jobs", lambda self: pytest.fail("the raw files were read again"))
    plain = qm9(tmp_path)
    paths = qm9(tmp_path, transform=transformer_m_transform(max_hops=3, reference_compatible=True))
    assert "pair_path" not in plain[0] and paths[0].pair_path.shape[1:] == (3, 3)


def test_pre_transform_is_cached_under_its_own_key(tmp_path):
    plain = qm9(tmp_path)
    cached = qm9(tmp_path, pre_transform=transformer_m_transform())
    assert plain.processed_dir != cached.processed_dir
    assert "pair_spd" in cached.load().store.layout and "pair_spd" not in plain.load().store.layout
    assert_same_graph(cached[3], transformer_m_transform()(plain[3]))


def test_lazy_dataset_featurises_on_first_use_and_force_reload_rebuilds(tmp_path, monkeypatch):
    builds = []
    original = cache_module.build_cache
    monkeypatch.setattr(cache_module, "build_cache", lambda *a, **k: builds.append(a[0]) or original(*a, **k))
    lazy = qm9(tmp_path, lazy=True)
    assert not builds and not (tmp_path / "cache").exists()
    assert len(lazy) == 21 and len(builds) == 1
    assert len(qm9(tmp_path)) == 21 and len(builds) == 1  # reused
    assert len(qm9(tmp_path, force_reload=True)) == 21 and len(builds) == 2


def test_pcqm4mv2_dataset_and_official_split(tmp_path):
    dataset = PCQM4Mv2Dataset(FIXTURES / "pcqm4mv2", cache_dir=tmp_path / "cache", num_proc=1)
    assert len(dataset) == 20 and dataset.split()["train"].tolist() == list(range(12))
    assert bool(dataset[0].has_pos) and not bool(dataset[15].has_pos)
    dm = PCQM4Mv2DataModule(str(FIXTURES / "pcqm4mv2"), cache_dir=str(tmp_path / "cache"), num_proc=1)
    dm.setup("fit")
    assert dm.load().folder == Path(dataset.processed_dir)
    dataset.transform = dm.access_transform()
    for item, position in zip(dm.splits["train"], dm.positions["train"]):
        assert_same_graph(item, dataset[int(position)])


def test_pdbbind_dataset_and_its_download_message(tmp_path):
    dataset = PDBBindDataset(FIXTURES / "pdbbind", cache_dir=tmp_path / "cache", num_proc=1)
    assert sorted(d.name for d in dataset) == ["184l", "1h22", "2r9w"] and dataset.codes == ["184l", "1h22", "2r9w"]
    with pytest.raises(FileNotFoundError, match="requires registration.*pdbbind.org.cn"):
        dataset.download()
    with pytest.raises(FileNotFoundError, match="INDEX_core_data.2016 is neither.*registration"):
        PDBBindDataset(tmp_path, download=True)


# ------------------------------------------------------------------ download
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def qm9_server(tmp_path, monkeypatch):
    """QM9's two URLs served from local files (PyG's ``download_url`` copies them); their real
    SHA-256 recorded in ``CHECKSUMS``; returns the list of URLs fetched."""
    server = tmp_path / "server"
    server.mkdir()
    with zipfile.ZipFile(server / "qm9.zip", "w") as zipped:
        for name in ("gdb9.sdf", "gdb9.sdf.csv"):
            zipped.write(QM9_RAW / name, name)
    shutil.copy(QM9_RAW / "uncharacterized.txt", server / "3195404")
    files = {download_module.QM9_URL: server / "qm9.zip", download_module.QM9_UNCHARACTERIZED_URL: server / "3195404"}
    fetched = []

    def local_download_url(url, folder, log=True, filename=None):
        fetched.append(url)
        target = Path(folder) / (filename or url.rpartition("/")[2])
        shutil.copy(files[url], target)
        return str(target)

    monkeypatch.setattr(download_module, "download_url", local_download_url)
    monkeypatch.setitem(download_module.CHECKSUMS, download_module.QM9_URL, sha256(server / "qm9.zip"))
    monkeypatch.setitem(download_module.CHECKSUMS, download_module.QM9_UNCHARACTERIZED_URL,
                        sha256(server / "3195404"))
    return fetched


def test_qm9_download_from_pygs_urls_with_checksums(tmp_path, qm9_server):
    root = tmp_path / "qm9"
    dataset = qm9(tmp_path, root=root, download=True)
    assert qm9_server == [download_module.QM9_URL, download_module.QM9_UNCHARACTERIZED_URL]
    assert sorted(p.name for p in (root / "raw").iterdir()) == ["gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt"]
    for name in ("gdb9.sdf", "gdb9.sdf.csv", "uncharacterized.txt"):
        assert (root / "raw" / name).read_bytes() == (QM9_RAW / name).read_bytes()
    assert len(dataset) == 21 and dataset[0].name == "gdb_1"


def test_a_checksum_mismatch_is_an_error_and_leaves_no_file(tmp_path, qm9_server, monkeypatch):
    monkeypatch.setitem(download_module.CHECKSUMS, download_module.QM9_URL, "0" * 64)
    root = tmp_path / "qm9"
    with pytest.raises(download_module.ChecksumError, match=r"qm9.zip: the downloaded file's SHA-256 is [0-9a-f]{64}, "
                       r"expected 0{64}"):
        qm9(tmp_path, root=root, download=True)
    assert not list((root / "raw").iterdir())  # no archive, no partial file, no temporary folder


def test_present_raw_files_are_not_downloaded(tmp_path, qm9_server):
    assert len(qm9(tmp_path, download=True)) == 21 and qm9_server == []
    with pytest.raises(FileNotFoundError, match="gdb9.sdf.*download=True"):
        qm9(tmp_path, root=tmp_path / "empty")


def test_pcqm4mv2_download_from_ogbs_urls_with_checksums(tmp_path, monkeypatch):
    import tarfile

    source = FIXTURES / "pcqm4mv2"
    server = tmp_path / "server"
    server.mkdir()
    with zipfile.ZipFile(server / "pcqm4m-v2.zip", "w") as zipped:
        for path in (source / "pcqm4m-v2").rglob("*"):
            if path.is_file():
                zipped.write(path, f"pcqm4m-v2/{path.relative_to(source / 'pcqm4m-v2')}")
    with tarfile.open(server / "pcqm4m-v2-train.sdf.tar.gz", "w:gz") as tar:
        tar.add(source / "pcqm4m-v2-train.sdf", "pcqm4m-v2-train.sdf")
    files = {download_module.PCQM4MV2_URL: server / "pcqm4m-v2.zip",
             download_module.PCQM4MV2_SDF_URL: server / "pcqm4m-v2-train.sdf.tar.gz"}
    monkeypatch.setattr(download_module, "download_url",
                        lambda url, folder, log=True, filename=None: shutil.copy(files[url], Path(folder) / filename))
    for url, path in files.items():
        monkeypatch.setitem(download_module.CHECKSUMS, url, sha256(path))
    root = tmp_path / "data"
    dataset = PCQM4Mv2Dataset(root, cache_dir=tmp_path / "cache", num_proc=1, download=True)
    assert (root / "pcqm4m-v2-train.sdf").read_bytes() == (source / "pcqm4m-v2-train.sdf").read_bytes()
    assert not [p for p in root.iterdir() if p.name.startswith(".") or p.suffix in (".zip", ".gz")]
    assert len(dataset) == 20 and bool(dataset[0].has_pos)


def test_fetch_checks_a_given_checksum(tmp_path):
    source = tmp_path / "file.txt"
    source.write_text("hello\n")
    folder = tmp_path / "into"
    with pytest.raises(download_module.ChecksumError):
        download_module.fetch(source.as_uri(), folder, sha256="f" * 64)
    assert not list(folder.iterdir())
    path = download_module.fetch(source.as_uri(), folder, sha256=sha256(source))
    assert path == folder / "file.txt" and path.read_text() == "hello\n"
