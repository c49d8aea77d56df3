"""The users'-files datamodule featurises every record it can and lists the others."""

from __future__ import annotations

import csv

from tmzoo.datamodules.files import FilesDataModule
from tmzoo.models import Mode


def test_smiles_file_with_bad_records(tmp_path):
    smi = tmp_path / "in.smi"
    smi.write_text("CCO a\nxx b\nc1ccccc1 c\n")
    dm = FilesDataModule(str(smi), batch_size=2)
    dm.setup("predict")
    graphs = dm.splits["predict"]
    assert [int(g.idx) for g in graphs] == [0, 2]
    assert all(int(g.mode) == Mode.ONLY_2D for g in graphs)
    with open(dm.failures_csv) as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{"index": "1", "name": "b", "error": "RDKit cannot parse SMILES 'xx'"}]
    batch = next(iter(dm.predict_dataloader()))
    assert batch.num_graphs == 2 and batch.mode.tolist() == [1, 1]


def test_conformers_enable_3d(tmp_path):
    smi = tmp_path / "in.smi"
    smi.write_text("CCO\nCC(=O)O\n")
    dm = FilesDataModule(str(smi), mode="2d3d", conformers=True)
    dm.setup("predict")
    assert all(bool(g.has_pos) and int(g.mode) == Mode.BOTH for g in dm.splits["predict"])


def test_sdf_keeps_coordinates(parity_dir):
    dm = FilesDataModule(str(parity_dir / "golden_shared.sdf"))
    dm.setup("predict")
    assert len(dm.splits["predict"]) == 6 and dm.has_coordinates
    assert all(int(g.mode) == Mode.BOTH for g in dm.splits["predict"])
