"""``tmzoo infer``: predict molecules of a user's file with a tmzoo or released checkpoint.

Writes one CSV row per input record, in input order. A record that cannot be parsed or
featurised gets an empty prediction and the reason in ``error``; the rest are predicted.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch_geometric.data import Batch, Data
from tqdm import tqdm

from tmzoo.checkpoints import ModelBundle, load_bundle
from tmzoo.chem.molecule import MoleculeError
from tmzoo.data.transforms import transformer_m_transform
from tmzoo.io.featurize import MODES, featurize_record
from tmzoo.io.records import file_kind, read_records
from tmzoo.models import Mode, TransformerM

MODE_NAMES = {Mode.BOTH: "2d3d", Mode.ONLY_2D: "2d", Mode.ONLY_3D: "3d"}


class _Pending:
    """Featurised records waiting to be predicted together."""

    def __init__(self):
        self.rows: list[dict] = []
        self.graphs: list[Data] = []
        self.modes: list[int] = []

    def __len__(self) -> int:
        return len(self.graphs)


def _predict(model: ModelBundle, pending: _Pending, device: torch.device) -> None:
    batch = Batch.from_data_list(pending.graphs).to(device)
    modes = torch.tensor(pending.modes, device=device) if isinstance(model.encoder, TransformerM) else None
    with torch.no_grad():
        values = model.predict(batch, modes).float().cpu()
    names = model.target_names
    for row, value in zip(pending.rows, values):
        if not torch.isfinite(value).all():
            row["error"] = "prediction is not finite"
            continue
        row["prediction"] = f"{value[0].item():.9g}"
        if len(names) > 1:
            for name, v in zip(names, value.tolist()):
                row[f"prediction_{name}"] = f"{v:.9g}"


def run_inference(
    checkpoint: str | Path,
    input_path: str | Path,
    output: str | Path,
    mode: str = "auto",
    batch_size: int = 64,
    max_atoms: int = 512,
    conformers: bool = False,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Predict every record of ``input_path`` into the CSV ``output``; returns counts."""
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {MODES}, got {mode!r}")
    file_kind(input_path)
    if not Path(input_path).is_file():
        raise FileNotFoundError(f"input file {input_path} does not exist")
    model = load_bundle(checkpoint).to(device)
    transform = transformer_m_transform(**model.featurization)
    model_has_3d = bool(getattr(model.encoder, "use_3d", True))
    names = model.target_names
    columns = ["index", "name", "smiles", "mode", "prediction"]
    if len(names) > 1:
        columns += [f"prediction_{n}" for n in names]
    columns.append("error")

    rows: list[dict] = []
    pending = _Pending()
    for record in tqdm(read_records(input_path), desc="predicting", unit="mol", disable=not progress):
        row = {"index": record.index, "name": record.name, "smiles": record.smiles, "mode": "",
               "prediction": "", "error": ""}
        rows.append(row)
        try:
            data = featurize_record(record, transform, mode, model_has_3d, max_atoms, conformers, seed)
            m = Mode(int(data.mode))
        except MoleculeError as err:
            row["error"] = str(err)
            continue
        except Exception as err:  # an unexpected failure stays with its record
            row["error"] = f"featurisation failed: {type(err).__name__}: {err}"
            continue
        row["mode"] = MODE_NAMES[m]
        pending.rows.append(row)
        pending.graphs.append(data)
        pending.modes.append(int(m))
        if len(pending) >= batch_size:
            _predict(model, pending, torch.device(device))
            pending = _Pending()
    if len(pending):
        _predict(model, pending, torch.device(device))

    _write_csv(rows, columns, Path(output))
    failed = [r for r in rows if r["error"]]
    return {"records": len(rows), "predicted": len(rows) - len(failed), "failed": len(failed),
            "failed_indices": [r["index"] for r in failed]}


def _write_csv(rows: list[dict], columns: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        if path.exists():
            print(f"tmzoo infer: replacing existing {path}", file=sys.stderr)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tmzoo infer", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="tmzoo .ckpt or released Transformer-M .pt")
    parser.add_argument("--input", required=True, help=".sdf (coordinates used), .smi or .csv (smiles column)")
    parser.add_argument("--output", required=True, help="CSV to write (one row per input record)")
    parser.add_argument("--mode", choices=MODES, default="auto",
                        help="auto: 2D+3D with coordinates, 2D otherwise (default)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-atoms", type=int, default=512, help="records with more atoms are reported")
    parser.add_argument("--conformers", action="store_true",
                        help="embed an RDKit conformer (ETKDG+MMFF) for inputs without coordinates")
    parser.add_argument("--seed", type=int, default=0, help="seed of the conformer embedding")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = run_inference(
            args.checkpoint, args.input, args.output, mode=args.mode, batch_size=args.batch_size,
            max_atoms=args.max_atoms, conformers=args.conformers, seed=args.seed, device=args.device,
            progress=not args.quiet,
        )
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"tmzoo infer: error: {err}", file=sys.stderr)
        return 2
    print(f"tmzoo infer: {summary['predicted']} of {summary['records']} records predicted -> {args.output}")
    if summary["failed"]:
        shown = ", ".join(map(str, summary["failed_indices"][:10]))
        more = " ..." if summary["failed"] > 10 else ""
        print(f"tmzoo infer: {summary['failed']} records not predicted (indices {shown}{more}); "
              f"reasons in the 'error' column of {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
