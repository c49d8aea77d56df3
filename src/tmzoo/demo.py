"""The README's main job: pretrain a small Transformer-M on the embedded PCQM4Mv2 sample.

``python -m tmzoo.demo`` (``make demo``): fit ``experiments/transformer_m_small.yaml`` on
``datamodules/pcqm4mv2_demo.yaml`` with the reference objective (mode dropout + denoising)
under a wall-clock budget, in the fastest precision of the device
(:func:`tmzoo.models.transformer_m.fastest_precision`), compare the validation MAE (2D, the
PCQM4Mv2 protocol) of the *final* weights — the validation set plays no part in choosing them —
with the train-mean baseline, write ``demo-output/model.ckpt`` and ``demo-output/demo.png``,
and predict a few molecules with ``tmzoo infer``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def train(out: Path, max_minutes: float, max_epochs: int) -> Path:
    """Run ``tmzoo fit``; returns the log folder of the run."""
    from tmzoo.cli.lightning import run_lightning_cli
    from tmzoo.models.transformer_m import fastest_precision

    minutes, seconds = divmod(round(max_minutes * 60), 60)
    cli = run_lightning_cli([
        "fit",
        "--config", "transformer_m_small",  # shipped configs, by name
        "--config", "pcqm4mv2_demo",
        "--trainer.precision", fastest_precision("cpu"),
        "--trainer.default_root_dir", str(out / "run"),
        "--trainer.max_epochs", str(max_epochs),
        "--trainer.max_time", f"00:00:{minutes:02d}:{seconds:02d}",
        "--model.init_args.optimizer.init_args.lr", "2e-3",
        "--model.init_args.lr_scheduler.init_args.warmup_steps", "40",
        "--trainer.enable_progress_bar", "false",
    ])
    # the final weights, not the best on validation (nor ``last.ckpt``, which Lightning updates
    # only when it saves a best checkpoint): the validation MAE reported must not come from the
    # checkpoint that set chose
    cli.trainer.save_checkpoint(out / "model.ckpt")
    return Path(cli.trainer.log_dir)


def evaluate(checkpoint: Path) -> dict:
    """Validation predictions (2D) of the checkpoint and the train-mean baseline."""
    from tmzoo.checkpoints import load_bundle
    from tmzoo.datamodules import PCQM4Mv2DataModule
    from tmzoo.models import Mode

    model = load_bundle(checkpoint)
    dm = PCQM4Mv2DataModule(root=None, batch_size=64, num_proc=1)
    dm.setup("validate")
    truth, pred = [], []
    with torch.no_grad():
        for batch in dm.val_dataloader():
            modes = torch.full((batch.num_graphs,), int(Mode.ONLY_2D))
            pred.append(model.predict(batch, modes)[:, 0])
            truth.append(batch.y[:, 0])
    truth, pred = torch.cat(truth), torch.cat(pred)
    return {
        "truth": truth, "pred": pred, "mae": (pred - truth).abs().mean().item(),
        "baseline_mae": (truth - dm.target_mean[0]).abs().mean().item(),
    }


def plot(log_dir: Path, result: dict, path: Path) -> None:
    """Learning curve (train loss, val MAE) beside a parity plot of the validation set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    logged = pd.read_csv(log_dir / "metrics.csv").reindex(columns=["step", "train/loss", "val/mae"])
    train, val = logged.dropna(subset=["train/loss"]), logged.dropna(subset=["val/mae"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    left.plot(train["step"], train["train/loss"], lw=1, label="train loss (L1 + denoising)")
    left.plot(val["step"], val["val/mae"], "o-", label="val MAE, 2D (eV)")
    left.axhline(result["baseline_mae"], ls="--", c="grey", label="train-mean MAE (eV)")
    left.set(xlabel="step", title="learning curve")
    left.legend()
    truth, pred = result["truth"].numpy(), result["pred"].numpy()
    lo, hi = min(truth.min(), pred.min()), max(truth.max(), pred.max())
    right.scatter(truth, pred, s=10, alpha=0.6)
    right.plot([lo, hi], [lo, hi], c="grey", lw=1)
    right.set(xlabel="DFT HOMO-LUMO gap (eV)", ylabel="predicted (eV)",
              title=f"validation parity: MAE {result['mae']:.3f} eV (mean: {result['baseline_mae']:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def predict_examples(checkpoint: Path, out: Path) -> Path:
    """``tmzoo infer`` on a few SMILES (one of them invalid, to show the error column)."""
    from tmzoo.cli.infer import main as infer

    examples = out / "examples.smi"
    examples.write_text(
        "CC(=O)Nc1ccc(O)cc1 paracetamol\n"
        "c1ccc2ccccc2c1 naphthalene\n"
        "O=C(O)c1ccccc1O salicylic_acid\n"
        "C1=CC=CN=C1 pyridine\n"
        "C1CC1(( not_a_molecule\n"
        "[Na+].[O-]C(=O)c1ccccc1 sodium_benzoate\n"
    )
    predictions = out / "predictions.csv"
    if infer(["--checkpoint", str(checkpoint), "--input", str(examples), "--output", str(predictions), "--quiet"]) != 0:
        raise RuntimeError("tmzoo infer failed")
    return predictions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmzoo.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="demo-output", help="folder for the checkpoint, plot and predictions")
    parser.add_argument("--minutes", type=float, default=3.5, help="training wall-clock budget")
    parser.add_argument("--max-epochs", type=int, default=100)
    args = parser.parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)

    log_dir = train(out, args.minutes, args.max_epochs)
    checkpoint = out / "model.ckpt"
    result = evaluate(checkpoint)
    plot(log_dir, result, out / "demo.png")
    predictions = predict_examples(checkpoint, out)

    print("\n=== tmzoo demo: Transformer-M pretrained on the PCQM4Mv2 sample ===")
    print(f"validation MAE (2D, PCQM4Mv2 protocol): {result['mae']:.4f} eV on {len(result['truth'])} held-out "
          "molecules (final weights: the validation set chose nothing)")
    print(f"train-mean baseline MAE:                {result['baseline_mae']:.4f} eV")
    print(f"checkpoint: {checkpoint}   plot: {out / 'demo.png'}   logs: {log_dir}")
    print(f"\ntmzoo infer --checkpoint {checkpoint} --input {out / 'examples.smi'} --output {predictions}")
    print(predictions.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
