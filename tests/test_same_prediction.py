"""The same molecule gets the same prediction through the datamodule (the task's forward in
eval mode on the datamodule's loader, as ``tmzoo test`` computes it) and through ``tmzoo infer``
on a file of those molecules, for every shipped experiment's kind of model.

Each kind is a tiny model built from its shipped YAML through the CLI, trained one step and
saved. Pretraining kinds read the PCQM4Mv2 fixture (train molecules with DFT geometries from
its SDF, the others from SMILES); QM9 fine-tuning reads the QM9 fixture (hydrogens, 3D);
``own_data`` a users' CSV. PDBBind is not covered: ``infer`` reads single molecules, not
ligand + pocket complexes.
"""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import pytest
import torch

from test_tasks_tinydata import write_properties_csv
from tmzoo.cli.infer import main as infer
from tmzoo.cli.lightning import run_lightning_cli
from tmzoo.datamodules.base import molecule_loader

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"
PRETRAINED = FIXTURES / "checkpoints" / "tiny_pretraining.ckpt"
PCQM = FIXTURES / "pcqm4mv2"
QM9 = FIXTURES / "qm9"
RTOL, ATOL = 1e-4, 1e-6  # fp32

TINY_TRANSFORMER_M = [f"--model.init_args.encoder.init_args.{k}={v}" for k, v in
                      {"num_layers": 1, "embed_dim": 16, "ffn_dim": 16, "num_heads": 2, "num_kernels": 4}.items()]
PCQM_DATA = ["--config", str(ROOT / "datamodules" / "pcqm4mv2_demo.yaml"), f"--data.init_args.root={PCQM}",
             "--data.init_args.num_proc=1", "--data.init_args.batch_size=4"]
QM9_DATA = ["--config", str(ROOT / "datamodules" / "qm9_demo.yaml"), f"--data.init_args.root={QM9}",
            "--data.init_args.split_sizes=[15,3,3]", "--data.init_args.num_proc=1", "--data.init_args.batch_size=4"]

TINY_GIN = ["--model.init_args.encoder.init_args.num_layers=2", "--model.init_args.encoder.init_args.embed_dim=16"]
TINY_SCHNET = [f"--model.init_args.encoder.init_args.{k}={v}" for k, v in
               {"embed_dim": 16, "num_filters": 16, "num_interactions": 1, "num_gaussians": 8}.items()]
FROM_PRETRAINED = [f"--model.init_args.pretrained={PRETRAINED}"]

#: kind -> (shipped experiment, tiny-shape overrides, data, marks). SchNet needs coordinates for
#: every molecule, which PCQM4Mv2's validation and test molecules lack: it reads QM9.
KINDS = {
    "transformer_m_small": ("transformer_m_small.yaml", [], "pcqm", ()),
    "transformer_m_small_on_qm9": ("transformer_m_small.yaml", [], "qm9", (pytest.mark.slow,)),  # README demo
    "transformer_m_L12": ("transformer_m_L12.yaml", TINY_TRANSFORMER_M, "pcqm", (pytest.mark.slow,)),
    "transformer_m_L18": ("transformer_m_L18.yaml", TINY_TRANSFORMER_M, "pcqm", (pytest.mark.slow,)),
    "graphormer_2d": ("graphormer_2d.yaml", TINY_TRANSFORMER_M, "pcqm", ()),
    "transformer_m_3d_only": ("transformer_m_3d_only.yaml", TINY_TRANSFORMER_M, "pcqm", ()),
    "gin_vn": ("gin_vn.yaml", TINY_GIN, "pcqm", ()),
    "gin_vn_on_qm9": ("gin_vn.yaml", TINY_GIN, "qm9", (pytest.mark.slow,)),
    "schnet": ("schnet.yaml", TINY_SCHNET, "qm9", ()),
    "finetune_qm9": ("finetune/qm9.yaml", FROM_PRETRAINED, "qm9", ()),
    "finetune_own_data": ("finetune/own_data.yaml", FROM_PRETRAINED, "csv", ()),
}


def train_tiny(experiment: str, overrides: list[str], data: list[str], folder: Path):
    """One training step of the experiment through the CLI; returns the CLI and its checkpoint."""
    cli = run_lightning_cli([
        "fit", "--config", str(ROOT / "experiments" / experiment), *overrides, *data,
        "--trainer.fast_dev_run=1", "--trainer.accelerator=cpu", "--trainer.devices=1",
        "--trainer.precision=32-true", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
        f"--trainer.default_root_dir={folder}",
    ])
    spread_predictions(cli.model)
    checkpoint = folder / "tiny.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    return cli, checkpoint


@torch.no_grad()
def spread_predictions(model) -> None:
    """Heads re-initialised as torch does, their output layer scaled up: after one step a tiny
    Transformer-M predicts nearly the same for every molecule, which would hide a wrong input."""
    torch.manual_seed(0)
    for name in ("gap_head", "head"):
        head = getattr(model, name, None)
        layers = [m for m in head.modules() if isinstance(m, torch.nn.Linear)] if head is not None else []
        for layer in layers:
            layer.reset_parameters()
        if layers:
            layers[-1].weight.mul_(1000.0)


@torch.no_grad()
def datamodule_predictions(model, datamodule) -> dict[int, float]:
    """Record index -> the task's prediction in eval mode, through the datamodule's batches
    (its loader settings: dense or PyG batches, size batching) for every split."""
    model.eval()
    out = {}
    for split in ("train", "val", "test"):
        loader = molecule_loader(datamodule.splits[split], batch_size=4, batch_by_size=True,
                                 dense_batches=datamodule.dense_batches)
        for batch in loader:
            pred = model(batch)[:, 0]
            out.update(zip(batch.idx.view(-1).tolist(), pred.tolist()))
    return out


def infer_predictions(checkpoint: Path, source: Path, folder: Path) -> list[dict]:
    output = folder / f"infer_{source.stem}.csv"
    assert infer(["--checkpoint", str(checkpoint), "--input", str(source), "--output", str(output),
                  "--workers", "0", "--batch-size", "4", "--precision", "32-true", "--quiet"]) == 0
    return list(csv.DictReader(open(output)))


def pcqm_inputs(folder: Path) -> list[tuple[Path, list[int]]]:
    """The fixture's SDF (train molecules, record i = molecule i) and a SMILES file of the others."""
    with gzip.open(PCQM / "pcqm4m-v2" / "raw" / "data.csv.gz", "rt") as handle:
        rows = list(csv.DictReader(handle))
    sdf_count = (PCQM / "pcqm4m-v2-train.sdf").read_text().count("$$$$")
    smi = folder / "others.smi"
    smi.write_text("".join(f"{r['smiles']} pcqm_{r['idx']}\n" for r in rows[sdf_count:]))
    return [(PCQM / "pcqm4m-v2-train.sdf", list(range(sdf_count))),
            (smi, [int(r["idx"]) for r in rows[sdf_count:]])]


@pytest.mark.parametrize("kind", [pytest.param(k, marks=KINDS[k][3]) for k in KINDS])
def test_datamodule_and_infer_give_the_same_prediction(kind, tmp_path, tmp_path_factory):
    experiment, overrides, data_kind, _ = KINDS[kind]
    cache = tmp_path_factory.getbasetemp() / f"same_prediction_cache_{data_kind}"
    if data_kind == "csv":
        table = write_properties_csv(tmp_path / "props.csv", with_missing=False)
        data = ["--data.path", table, "--data.targets", "[gap]", "--data.target_units", "[eV]",
                "--data.batch_size=4"]
        inputs = [(Path(table), None)]
    elif data_kind == "qm9":
        data = [*QM9_DATA, f"--data.init_args.cache_dir={cache}"]
        inputs = [(QM9 / "raw" / "gdb9.sdf", None)]
    else:
        data = [*PCQM_DATA, f"--data.init_args.cache_dir={cache}"]
        inputs = pcqm_inputs(tmp_path)
    cli, checkpoint = train_tiny(experiment, overrides, data, tmp_path)
    expected = datamodule_predictions(cli.model, cli.datamodule)

    values = torch.tensor(list(expected.values()))
    tolerance = RTOL * float(values.abs().max()) + ATOL
    assert float(values.std()) > 10 * tolerance, f"{kind}: molecules hardly differ, a wrong input could pass"
    compared = 0
    for source, record_ids in inputs:
        for row in infer_predictions(checkpoint, source, tmp_path):
            record = int(row["index"]) if record_ids is None else record_ids[int(row["index"])]
            if record not in expected:
                continue  # left out of the dataset (e.g. failed featurisation): nothing to compare
            if row["error"] and "--conformers" in row["error"] and kind == "transformer_m_3d_only":
                compared += 1  # no 2D channel: a record without coordinates is refused, not guessed
                continue
            assert not row["error"], f"{kind}: {source.name} record {row['index']}: {row['error']}"
            assert float(row["prediction"]) == pytest.approx(expected[record], rel=RTOL, abs=ATOL), (
                f"{kind}: molecule {record} ({row['smiles']}, read in {row['mode']}) differs")
            compared += 1
    assert compared == len(expected) >= 5
