"""The embedded demo data and the shipped datamodule YAMLs."""

from pathlib import Path

import pytest
import yaml
from jsonargparse import ArgumentParser

from tmzoo.datamodules import MoleculeDataModule, PCQM4Mv2DataModule, QM9DataModule
from tmzoo.datamodules.demo import demo_root

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"
YAMLS = sorted((REPO / "datamodules").glob("*.yaml"))
FIXTURE_ROOTS = {"qm9.yaml": FIXTURES / "qm9", "pcqm4mv2.yaml": FIXTURES / "pcqm4mv2",
                 "pdbbind.yaml": FIXTURES / "pdbbind"}


def test_demo_files_ship_in_the_package():
    qm9, pcqm = demo_root("qm9"), demo_root("pcqm4mv2")
    assert qm9.is_relative_to(Path(__import__("tmzoo").__file__).parent)
    for name in ("gdb9.sdf.gz", "gdb9.sdf.csv.gz", "uncharacterized.txt"):
        assert (qm9 / "raw" / name).is_file()
    for name in ("pcqm4m-v2/raw/data.csv.gz", "pcqm4m-v2/split_dict.pt", "pcqm4m-v2-train.sdf.gz"):
        assert (pcqm / name).is_file()
    with pytest.raises(ValueError, match="no demo data set"):
        demo_root("zinc")


def test_pcqm4mv2_demo(tmp_path, monkeypatch):
    monkeypatch.setenv("TMZOO_CACHE", str(tmp_path))
    dm = PCQM4Mv2DataModule(root=None, num_proc=1)
    assert dm.cache_folder.parent == tmp_path and dm.has_coordinates
    dm.setup("fit")
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 1360, "val": 170, "test": 85, "predict": 85}
    assert not dm.load().failures


def test_qm9_demo_describes_itself_before_featurising(tmp_path, monkeypatch):
    monkeypatch.setenv("TMZOO_CACHE", str(tmp_path))
    dm = QM9DataModule(root=None)
    assert dm.target_names == ["gap"] and dm.num_targets == 1 and dm.target_units == ["eV"]
    assert dm.has_coordinates and dm.featurization == {"max_hops": 5, "reference_compatible": False}
    assert not list(tmp_path.iterdir())  # nothing featurised yet


@pytest.mark.slow
def test_qm9_demo_featurises(tmp_path, monkeypatch):
    monkeypatch.setenv("TMZOO_CACHE", str(tmp_path))
    dm = QM9DataModule(root=None, num_proc=2)
    dm.setup("fit")
    assert len(dm.load()) == 5000 and not dm.load().failures
    assert {k: len(v) for k, v in dm.splits.items()} == {"train": 4204, "val": 382, "test": 414}
    assert 6.0 < dm.target_mean[0] < 8.0  # QM9 gaps: ~6.9 eV on average


@pytest.mark.parametrize("path", YAMLS, ids=[p.name for p in YAMLS])
def test_shipped_yaml_instantiates(path, tmp_path, monkeypatch):
    monkeypatch.setenv("TMZOO_CACHE", str(tmp_path))
    config = yaml.safe_load(path.read_text())
    assert set(config) == {"data"}, "datamodule YAMLs hold the data section only"
    init = config["data"]["init_args"]
    if path.name in FIXTURE_ROOTS:
        init["root"] = str(FIXTURE_ROOTS[path.name])
    else:
        assert init["root"] is None, "demo YAMLs read the embedded data"
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(MoleculeDataModule, "data")
    dm = parser.instantiate_classes(parser.parse_object(config)).data
    assert isinstance(dm, MoleculeDataModule) and dm.num_targets >= 1


def test_yamls_cover_every_datamodule():
    assert {p.name for p in YAMLS} >= {"pcqm4mv2.yaml", "pcqm4mv2_demo.yaml", "qm9.yaml",
                                      "qm9_demo.yaml", "pdbbind.yaml"}
