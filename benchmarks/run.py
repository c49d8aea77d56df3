"""tmzoo against the reference Transformer-M's own code, on the same molecules, in one run.

    .venv/bin/python benchmarks/run.py --quick --reference ../shared/reference   # a few minutes
    .venv/bin/python benchmarks/run.py --reference ../shared/reference           # full lengths

``--reference`` is the folder of the shared harness (``reference.py``, ``setup.sh``): the
reference's featuriser, collator, model and loss run unchanged from it (prepared once by its
``setup.sh``). Every comparison takes turns round by round (A B, then B A, ...) so load from
other processes hits both sides; a ratio is the median of the per-round ratios. Prints one
``name: value`` line per figure; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import datetime
import gc
import gzip
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "pcqm4mv2" / "sample1700"
DEFAULT_BUILD = Path(os.environ.get("TM_REF_BUILD", Path.home() / ".cache" / "tm-reference-build"))

MODE_PROBS = (0.2, 0.2, 0.6)  # the reference recipe's --mode-prob
NOISE_STD, CLIP_NORM = 0.2, 5.0
ADAMW = dict(lr=2e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
# the reference recipe: dropout 0, attention 0.1, activation 0.1, droppath 0.1
REGULARISATION = dict(dropout=0.0, attention_dropout=0.1, activation_dropout=0.1, droppath=0.1)
BOUNDS = {  # name: (">=" or "<=", bound), from the issue that asked for these figures
    "epoch_speedup_vs_reference": (">=", 2.0),
    "l12_step_speedup_vs_reference": (">=", 1.5),
    "infer_speedup_vs_reference": (">=", 3.0),
    "l12_step_memory_vs_reference": ("<=", 0.8),
    "featurize_speedup_vs_reference": (">=", 3.0),
}
SECTIONS = ("featurize", "epoch", "l12", "infer", "memory")


@dataclass(frozen=True)
class Shape:
    layers: int
    embed_dim: int
    ffn_dim: int
    heads: int
    kernels: int
    batch: int

    def describe(self) -> str:
        return (f"L{self.layers} C{self.embed_dim} F{self.ffn_dim} H{self.heads} K{self.kernels}, batch {self.batch}, "
                f"modes {'/'.join(map(str, MODE_PROBS))}, dropout/attn/act/droppath 0/0.1/0.1/0.1, AdamW, clip 5")


SMALL = Shape(4, 256, 256, 8, 32, 64)
L12 = Shape(12, 768, 768, 32, 128, 32)
INFER_BATCH = 256


# ----------------------------------------------------------------------------------- output
def emit(name: str, value, note: str = "") -> None:
    if isinstance(value, float):
        value = f"{value:.4g}"
    print(f"{name}: {value}" + (f" ({note})" if note else ""), flush=True)


def quartiles(xs: list[float]) -> tuple[float, float, float]:
    xs = sorted(xs)
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    lo, med, hi = statistics.quantiles(xs, n=4, method="inclusive")
    return lo, med, hi


def report(name: str, xs: list[float]) -> float:
    lo, med, hi = quartiles(xs)
    spread = f"p25 {lo:.4g}, p75 {hi:.4g}, n {len(xs)}"
    if name in BOUNDS:
        op, bound = BOUNDS[name]
        met = med >= bound if op == ">=" else med <= bound
        spread = f"bound {op} {bound}: {'met' if met else 'NOT met'}; {spread}"
    emit(name, med, spread)
    return med


def interleaved(sides: dict, rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call ``sides[name](round) -> seconds`` for every side each round, the order rotating
    (A B, B A, ...); the first ``warmup`` rounds are dropped."""
    names = list(sides)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(warmup + rounds):
        order = names if r % 2 == 0 else names[::-1]
        for n in order:
            dt = sides[n](r)
            if r >= warmup:
                times[n].append(dt)
    return times


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ratios(num: list[float], den: list[float]) -> list[float]:
    return [a / b for a, b in zip(num, den)]


def cpu_model() -> str:
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------------- data
def load_data(data_dir: Path) -> tuple[list, list[float], list[str]]:
    """The SDF's molecules (3D) with their gaps, and all SMILES of the CSV (the SDF is the
    CSV's first rows, in order)."""
    from rdkit import Chem

    with gzip.open(data_dir / "pcqm4m-v2" / "raw" / "data.csv.gz", "rt") as handle:
        rows = list(csv.DictReader(handle))
    mols = list(Chem.SDMolSupplier(str(data_dir / "pcqm4m-v2-train.sdf")))
    bad = [i for i, m in enumerate(mols) if m is None]
    if bad:
        raise SystemExit(f"{data_dir}/pcqm4m-v2-train.sdf: records {bad[:5]} cannot be read")
    gaps = [float(r["homolumogap"]) for r in rows[: len(mols)]]
    return mols, gaps, [r["smiles"] for r in rows]


# ------------------------------------------------------------------------------------ tmzoo
def tmzoo_precision(requested: str) -> str:
    """``auto``: the precision of tmzoo's shipped pretraining recipe (its L12 experiment)."""
    if requested != "auto":
        return requested
    import yaml

    with open(ROOT / "experiments" / "transformer_m_L12.yaml") as handle:
        config = yaml.safe_load(handle)
    return str((config.get("trainer") or {}).get("precision") or "32-true")


def forward_context(precision: str, device: str = "cpu"):
    """What Lightning wraps ``training_step`` in for ``precision`` (its precision plugin)."""
    if precision.endswith("-mixed"):
        from lightning.pytorch.plugins.precision import MixedPrecision

        return MixedPrecision(precision, device).forward_context()
    if precision not in ("32", "32-true"):
        raise SystemExit(f"precision {precision!r} is not benchmarked (32-true or *-mixed)")
    return contextlib.nullcontext()


def tmzoo_task(shape: Shape):
    from tmzoo.models import DenoisingHead, GapHead, TransformerM
    from tmzoo.tasks import Pretraining

    encoder = TransformerM(
        num_layers=shape.layers, embed_dim=shape.embed_dim, ffn_dim=shape.ffn_dim, num_heads=shape.heads,
        num_kernels=shape.kernels, mode_probs=MODE_PROBS, **REGULARISATION,
    )
    head = partial(DenoisingHead, attention_dropout=REGULARISATION["attention_dropout"])
    return Pretraining(encoder=encoder, gap_head=GapHead, denoising_head=head, noise_std=NOISE_STD)


def tmzoo_datamodule(data_dir: Path, cache_dir: Path, batch_size: int, workers: int):
    """tmzoo's PCQM4Mv2 datamodule over the sample (its default featurisation, cache and
    loaders); the train split is the SDF's molecules."""
    from tmzoo.datamodules import PCQM4Mv2DataModule

    dm = PCQM4Mv2DataModule(root=str(data_dir), cache_dir=str(cache_dir), batch_size=batch_size,
                            num_workers=workers)
    dm.prepare_data()
    dm.setup("fit")
    return dm


class TmzooTrainer:
    """``Pretraining.training_step`` under tmzoo's precision, backward, clip 5, AdamW, on the
    batches of the datamodule's own train loader."""

    def __init__(self, shape: Shape, datamodule, precision: str, device: str = "cpu"):
        self.task = tmzoo_task(shape).to(device)
        self.optimizer = torch.optim.AdamW(self.task.parameters(), **ADAMW)
        self.loader = datamodule.train_dataloader()
        self.precision, self.device = precision, device

    def step(self, batch, index: int = 0) -> None:
        if self.device != "cpu":
            batch = batch.to(self.device)
        with forward_context(self.precision, self.device.split(":")[0]):
            loss = self.task.training_step(batch, index)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.task.parameters(), CLIP_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, steps: int | None = None) -> int:
        """One pass over the loader (``steps`` batches at most); returns the molecules seen."""
        self.task.train()
        seen = 0
        for i, batch in enumerate(itertools.islice(self.loader, steps)):
            self.step(batch, i)
            seen += batch.num_graphs
        return seen


# -------------------------------------------------------------------------------- reference
def load_reference(folder: Path, build: Path):
    sys.path.insert(0, str(folder.resolve()))
    import reference as R  # the shared harness's loader of the reference code

    return R, R.load(build)


def reference_model(R, ref, shape: Shape):
    args = R.build_args(
        encoder_layers=shape.layers, encoder_embed_dim=shape.embed_dim, encoder_ffn_embed_dim=shape.ffn_dim,
        encoder_attention_heads=shape.heads, num_3d_bias_kernel=shape.kernels, dropout=REGULARISATION["dropout"],
        attention_dropout=REGULARISATION["attention_dropout"], act_dropout=REGULARISATION["activation_dropout"],
        droppath_prob=REGULARISATION["droppath"],
    )
    return R.build_model(ref, args, mode_probs=MODE_PROBS)


def share_weights(model, task) -> str:
    """Copy the reference model's weights into the tmzoo task (released-checkpoint key map)."""
    from tmzoo.checkpoints.official import official_module_name

    try:
        task.load_state_dict({official_module_name(k): v for k, v in model.state_dict().items()}, strict=True)
    except RuntimeError as err:  # the speed comparison does not need equal weights
        return f"not shared ({str(err).splitlines()[0][:120]})"
    return "shared (reference initialisation)"


class ReferenceTrainer:
    """The reference recipe's step: its collator in a DataLoader over preprocessed items, its
    loss (noise 0.2, L1 + denoising) ÷ sample size, backward, clip 5, AdamW."""

    def __init__(self, R, ref, shape: Shape, items: list, workers: int, device: str = "cpu"):
        self.R, self.device = R, device
        self.model = reference_model(R, ref, shape).to(device)
        self.criterion = R.build_criterion(ref, NOISE_STD)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), **ADAMW)
        self.loader = torch.utils.data.DataLoader(
            items, batch_size=shape.batch, shuffle=True, collate_fn=partial(R.collate, ref), num_workers=workers,
            persistent_workers=workers > 0,
        )

    def step(self, batch: dict) -> None:
        if self.device != "cpu":
            batch = {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        loss, size, _ = self.criterion(self.model, self.R.sample(batch))
        (loss / size).backward()  # fairseq divides the summed gradients by the sample size
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP_NORM)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, steps: int | None = None) -> int:
        self.model.train()
        seen = 0
        for batch in itertools.islice(self.loader, steps):
            self.step(batch)
            seen += int(batch["x"].shape[0])
        return seen


# ---------------------------------------------------------------------------- featurisation
def section_featurize(R, ref, mols, gaps, quick: bool) -> None:
    """Mol (3D) -> model-ready item: the reference's mol2graph + Data + preprocess_item, against
    tmzoo's mol_to_data + the datamodules' default transform. Blocks of 40 molecules."""
    from tmzoo.chem.molecule import mol_to_data
    from tmzoo.datamodules.base import MoleculeDataModule

    transform = MoleculeDataModule().transform()
    n = min(len(mols), 400) if quick else len(mols)
    blocks = [range(i, min(i + 40, n)) for i in range(0, n, 40)]
    passes = 1 if quick else 2

    def tmzoo_item(i):
        data = mol_to_data(mols[i])
        data.y = torch.tensor([[gaps[i]]])
        return transform(data)

    def per_mol(fn, r):
        block = blocks[r % len(blocks)]
        return timed(lambda: [fn(i) for i in block]) / len(block)

    t = interleaved({
        "reference": lambda r: per_mol(lambda i: R.item_from_mol(ref, mols[i], gaps[i], i), r),
        "tmzoo": lambda r: per_mol(tmzoo_item, r),
    }, passes * len(blocks))
    emit("featurize_molecules", n, f"{float(np.mean([m.GetNumAtoms() for m in mols[:n]])):.1f} atoms on average")
    report("featurize_us_per_mol_reference", [x * 1e6 for x in t["reference"]])
    report("featurize_us_per_mol_tmzoo", [x * 1e6 for x in t["tmzoo"]])
    report("featurize_speedup_vs_reference", ratios(t["reference"], t["tmzoo"]))


# -------------------------------------------------------------------------------- training
def section_training(R, ref, items, args, precision: str, cache_dir: Path) -> None:
    """One shuffled epoch at the small shape, then ``--l12-steps`` L12 steps, each side with
    its own data path (loader, collation) inside the timing."""
    data_dir = Path(args.data)
    plans = []
    if "epoch" in args.only:
        plans.append(("epoch", SMALL, None, 1 if args.quick else 3))
    if "l12" in args.only:
        plans.append(("l12_step", L12, args.l12_steps, 1 if args.quick else 3))
    for name, shape, steps, rounds in plans:
        dm = tmzoo_datamodule(data_dir, cache_dir, shape.batch, args.workers)
        rt = ReferenceTrainer(R, ref, shape, items, args.workers)
        tt = TmzooTrainer(shape, dm, precision)
        emit(f"{name}_config", shape.describe() + (f", {steps} steps" if steps else ", one epoch of "
             f"{len(items)} molecules") + f"; tmzoo {precision}, reference fp32; {args.workers} loader workers each")
        emit(f"{name}_weights", share_weights(rt.model, tt.task))
        seen: dict[str, int] = {}

        def side(trainer, label, warm_steps):
            def run(r):
                limit = warm_steps if r == 0 else steps  # round 0 warms up (dropped)
                t0 = time.perf_counter()
                seen[label] = trainer.run(limit)
                return time.perf_counter() - t0
            return run

        # warm-up: a few steps each (allocator, threads, workers, any compilation), not timed
        warm = 2 if steps else (None if args.warm_epoch else 4)
        t = interleaved({"reference": side(rt, "reference", warm), "tmzoo": side(tt, "tmzoo", warm)},
                        2 * rounds)
        for label in ("reference", "tmzoo"):
            report(f"{name}_mols_per_s_{label}", [seen[label] / x for x in t[label]])
        report(f"{name}_speedup_vs_reference", ratios(t["reference"], t["tmzoo"]))
        del rt, tt, dm
        gc.collect()


# ------------------------------------------------------------------------------- inference
class SmilesItems(torch.utils.data.Dataset):
    """The reference's featurisation of SMILES, per item (as its datasets do in workers)."""

    def __init__(self, R, ref, smiles: list[str]):
        self.R, self.ref, self.smiles = R, ref, smiles

    def __len__(self) -> int:
        return len(self.smiles)

    def __getitem__(self, i: int):
        return self.R.item_from_smiles(self.ref, self.smiles[i], 0.0, i)


def section_inference(R, ref, smiles: list[str], args, tmp: Path) -> None:
    """L12, SMILES text -> predictions, 2D: ``tmzoo infer``'s function against the reference's
    featurisation + collator in a DataLoader + model (eval, no_grad, graph token)."""
    from tmzoo.checkpoints import save_bundle
    from tmzoo.cli.infer import run_inference

    n = min(len(smiles), args.infer_molecules or len(smiles))
    smiles = smiles[:n]
    text = tmp / "molecules.smi"
    text.write_text("\n".join(smiles) + "\n")
    model = reference_model(R, ref, L12).eval()
    task = tmzoo_task(L12)
    emit("infer_config", f"L12 C768 H32 K128, {n} SMILES -> predictions, 2D, batch {INFER_BATCH}, "
         f"{args.workers} loader workers each; weights {share_weights(model, task)}")
    checkpoint = tmp / "l12.ckpt"
    save_bundle(task.tmzoo_spec(), task.state_dict(), checkpoint)
    del task
    loader = torch.utils.data.DataLoader(
        SmilesItems(R, ref, text.read_text().split()), batch_size=INFER_BATCH, collate_fn=partial(R.collate, ref),
        num_workers=args.workers,
    )

    def reference_run(r):
        out = []
        t0 = time.perf_counter()
        with torch.no_grad():
            for batch in loader:
                out.append(model(batched_data=batch)[0][:, 0, :])
        assert sum(len(o) for o in out) == n
        return time.perf_counter() - t0

    def tmzoo_run(r):
        t0 = time.perf_counter()
        summary = run_inference(checkpoint, text, tmp / f"predictions{r}.csv", mode="2d", batch_size=INFER_BATCH,
                                progress=False, workers=args.workers)
        dt = time.perf_counter() - t0
        if summary.get("failed", 0) if isinstance(summary, dict) else False:
            raise SystemExit(f"tmzoo infer failed on some molecules: {summary}")
        return dt

    t = interleaved({"reference": reference_run, "tmzoo": tmzoo_run}, 2 if args.quick else 4, warmup=0)
    report("infer_mols_per_s_reference", [n / x for x in t["reference"]])
    report("infer_mols_per_s_tmzoo", [n / x for x in t["tmzoo"]])
    report("infer_speedup_vs_reference", ratios(t["reference"], t["tmzoo"]))


# ---------------------------------------------------------------------------------- memory
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def memory_child(side: str, args) -> None:
    """In this fresh process: one side's L12 trainer, three batches fetched from its loader,
    a warm-up step (AdamW state), then the peak RSS over two steps. Prints one JSON line."""
    shape = L12
    if side == "reference":
        R, ref = load_reference(Path(args.reference), Path(args.build))
        mols, gaps, _ = load_data(Path(args.data))
        count = 4 * shape.batch
        items = [R.item_from_mol(ref, m, y, i) for i, (m, y) in enumerate(zip(mols[:count], gaps))]
        trainer = ReferenceTrainer(R, ref, shape, items, 0)
    else:
        dm = tmzoo_datamodule(Path(args.data), Path(args.cache_dir), shape.batch, 0)
        trainer = TmzooTrainer(shape, dm, tmzoo_precision(args.precision))
    batches = list(itertools.islice(trainer.loader, 3))
    trainer.step(batches[0])
    gc.collect()
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # VmHWM := VmRSS
    for batch in batches[1:]:
        trainer.step(batch)
    print(json.dumps({"before_kb": before, "step_peak_kb": _status_kb("VmHWM")}))


def section_memory(args, cache_dir: Path) -> None:
    """Peak RSS of L12 training steps above the RSS before them, each side in fresh processes
    (``--memory-repeats`` each, alternating)."""
    step: dict[str, list[float]] = {"reference": [], "tmzoo": []}
    for rep in range(args.memory_repeats):
        for side in ("reference", "tmzoo")[:: 1 if rep % 2 == 0 else -1]:
            cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", side, "--reference",
                   str(args.reference), "--build", str(args.build), "--data", str(args.data), "--threads",
                   str(args.threads), "--precision", args.precision, "--cache-dir", str(cache_dir)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if proc.returncode:
                raise SystemExit(f"memory child ({side}) failed:\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout.strip().splitlines()[-1])
            step[side].append((result["step_peak_kb"] - result["before_kb"]) / 1024)
    emit("l12_step_memory_config", f"L12 batch {L12.batch}, peak RSS over 2 steps minus RSS before, after a "
         "warm-up step; one fresh process per side and repeat")
    report("l12_step_memory_mb_reference", step["reference"])
    report("l12_step_memory_mb_tmzoo", step["tmzoo"])
    report("l12_step_memory_vs_reference", ratios(step["tmzoo"], step["reference"]))


# ------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", default=None,
                        help="folder of the shared reference harness (reference.py); without it nothing is compared")
    parser.add_argument("--build", default=str(DEFAULT_BUILD),
                        help="the reference harness's BUILD_DIR (default: $TM_REF_BUILD or ~/.cache/tm-reference-build)")
    parser.add_argument("--data", default=str(DEFAULT_DATA),
                        help="folder with pcqm4m-v2-train.sdf, pcqm4m-v2/raw/data.csv.gz and split_dict.pt")
    parser.add_argument("--quick", action="store_true", help="shorter: fewer rounds, steps and molecules")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads, both sides (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers, both sides (default 1)")
    parser.add_argument("--precision", default="auto",
                        help="tmzoo's precision (default: that of experiments/transformer_m_L12.yaml)")
    parser.add_argument("--l12-steps", type=int, default=None, help="L12 steps per round (default 12, quick 4)")
    parser.add_argument("--infer-molecules", type=int, default=None, help="SMILES to predict (default all 1,700)")
    parser.add_argument("--memory-repeats", type=int, default=None, help="fresh processes per side (default 3, quick 1)")
    parser.add_argument("--warm-epoch", action="store_true", help="warm up with a whole epoch instead of 4 steps")
    parser.add_argument("--memory-child", choices=("reference", "tmzoo"), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.l12_steps = args.l12_steps or (4 if args.quick else 12)
    # the issue names all 1,700 SMILES for the inference figure: --quick keeps them (fewer rounds only)
    args.memory_repeats = args.memory_repeats or (1 if args.quick else 3)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    if args.memory_child:
        memory_child(args.memory_child, args)
        return

    start = time.perf_counter()
    emit("date", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    emit("machine", f"{cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}, "
         f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    emit("load_average_at_start", load_average(), "1, 5, 15 min")
    if args.reference is None:
        emit("reference", "not given (--reference ../shared/reference): nothing to compare")
        return
    data_dir = Path(args.data)
    if not (data_dir / "pcqm4m-v2-train.sdf").is_file():
        raise SystemExit(f"{data_dir} has no pcqm4m-v2-train.sdf (--data)")
    R, ref = load_reference(Path(args.reference), Path(args.build))
    emit("reference", f"lsj2408/Transformer-M {ref.commit[:7]} from {args.reference}, run unchanged")
    precision = tmzoo_precision(args.precision)
    emit("tmzoo_precision", precision, "reference: fp32, its CPU path")
    mols, gaps, smiles = load_data(data_dir)
    emit("molecules", f"{len(mols)} SDF (3D), {len(smiles)} SMILES from {data_dir}")

    with tempfile.TemporaryDirectory(prefix="tmzoo-bench-") as tmp:
        tmp = Path(tmp)
        cache_dir = tmp / "cache"
        if "featurize" in args.only:
            section_featurize(R, ref, mols, gaps, args.quick)
        if {"epoch", "l12"} & set(args.only):
            items = [R.item_from_mol(ref, m, y, i) for i, (m, y) in enumerate(zip(mols, gaps))]
            section_training(R, ref, items, args, precision, cache_dir)
            del items
        if "infer" in args.only:
            section_inference(R, ref, smiles, args, tmp)
        if "memory" in args.only:
            if not cache_dir.exists():
                tmzoo_datamodule(data_dir, cache_dir, L12.batch, 0)
            section_memory(args, cache_dir)
    emit("load_average_at_end", load_average(), "1, 5, 15 min")
    emit("wall_s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
