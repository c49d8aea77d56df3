"""L12 on one GPU: tmzoo (bf16-mixed, compiled) against the reference's own code (fp16 as its
recipe runs it), training at batch 256 and inference from SMILES. Run through ``gpu.sh``.

    benchmarks/gpu.sh                          # on a GPU machine: about 3-4 minutes
    benchmarks/gpu.sh --device cpu --dry-run   # tiny shapes on CPU, seconds: checks the script

Training: each side runs ``--warmup`` steps (compilation, allocator, loader workers), then
``--steps`` timed steps, each side with its own data path (tmzoo's datamodule loader; the
reference's collator in a DataLoader over its preprocessed items), synchronised before the
clock stops. The reference runs as fairseq's ``--fp16`` does: the model in fp16, fp32 master
weights in the optimizer, dynamic loss scaling (initial scale 128). Peak memory is
``torch.cuda.max_memory_allocated`` during the timed steps, one side at a time.
"""

from __future__ import annotations

import argparse
import gc
import platform
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the CPU benchmark: shared trainers and data helpers)

PUBLISHED_A100 = 1400  # molecules/s per A100 of the published recipe (8 GPUs, batch 256 in total)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class FP16Reference(bench.ReferenceTrainer):
    """The reference step as fairseq ``--fp16`` runs it: fp16 model and inputs, fp32 master
    weights, loss scaled by a dynamic factor; a step with non-finite gradients is skipped and
    the scale halved."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model.half()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.master = [p.detach().float().clone().requires_grad_(True) for p in self.params]
        self.optimizer = torch.optim.AdamW(self.master, **bench.ADAMW)
        self.scale, self.skipped = 128.0, 0

    def step(self, batch: dict) -> None:
        batch = {k: (v.to(self.device, non_blocking=True).half() if v.is_floating_point() else
                     v.to(self.device, non_blocking=True)) if torch.is_tensor(v) else v for k, v in batch.items()}
        loss, size, _ = self.criterion(self.model, self.R.sample(batch))
        (loss.float() * (self.scale / size)).backward()
        for master, p in zip(self.master, self.params):
            master.grad = p.grad.float().div_(self.scale) if p.grad is not None else torch.zeros_like(master)
            p.grad = None
        norm = torch.nn.utils.clip_grad_norm_(self.master, bench.CLIP_NORM)
        if torch.isfinite(norm):
            self.optimizer.step()
            with torch.no_grad():
                for master, p in zip(self.master, self.params):
                    p.copy_(master)
        else:
            self.scale /= 2
            self.skipped += 1
        self.optimizer.zero_grad(set_to_none=True)


def cycle(loader):
    while True:
        yield from loader


def time_training(trainer, batch_size_of, warmup: int, steps: int, device: str) -> dict:
    batches = cycle(trainer.loader)
    model = getattr(trainer, "task", None) or trainer.model
    model.train()
    for i in range(warmup):
        trainer.step(next(batches)) if not hasattr(trainer, "task") else trainer.step(next(batches), i)
    sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    seen = 0
    t0 = time.perf_counter()
    for i in range(steps):
        batch = next(batches)
        trainer.step(batch) if not hasattr(trainer, "task") else trainer.step(batch, i)
        seen += batch_size_of(batch)
    sync(device)
    seconds = time.perf_counter() - t0
    out = {"mols_per_s": seen / seconds, "seconds": seconds, "molecules": seen}
    if device.startswith("cuda"):
        out["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
        out["step_gb"] = (torch.cuda.max_memory_allocated() - before) / 2**30
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True, help="folder of the shared reference harness")
    parser.add_argument("--build", default=str(bench.DEFAULT_BUILD), help="its BUILD_DIR (setup.sh)")
    parser.add_argument("--data", default=str(bench.DEFAULT_DATA))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per side")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps first (compilation)")
    parser.add_argument("--workers", type=int, default=8, help="DataLoader workers, both sides")
    parser.add_argument("--infer-molecules", type=int, default=None, help="SMILES to predict (default all)")
    parser.add_argument("--precision", default="bf16-mixed", help="tmzoo's precision")
    parser.add_argument("--compile", choices=("auto", "inductor", "eager", "off"), default="auto",
                        help="torch.compile of tmzoo's encoder (auto: inductor on GPU, eager backend on CPU)")
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes and few steps: checks the script")
    args = parser.parse_args()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu --dry-run to check the script")
    shape = bench.Shape(12, 768, 768, 32, 128, args.batch)
    n_infer = args.infer_molecules
    if args.dry_run:
        shape = bench.Shape(2, 32, 32, 4, 8, 8)
        args.steps, args.warmup, args.workers, n_infer = 2, 1, 0, n_infer or 24
    compile_backend = {"auto": "inductor" if device.startswith("cuda") else "eager"}.get(args.compile, args.compile)
    warnings.filterwarnings("ignore", message=".*self.log.*")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    torch.manual_seed(0)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    start = time.perf_counter()
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else bench.cpu_model()
    bench.emit("gpu_device", f"{name}; torch {torch.__version__}, Python {platform.python_version()}")
    R, ref = bench.load_reference(Path(args.reference), Path(args.build))
    mols, gaps, smiles = bench.load_data(Path(args.data))
    bench.emit("gpu_train_config", f"{shape.describe()}; tmzoo {args.precision}, compile {compile_backend}; "
               f"reference fp16 (fairseq --fp16 style); {args.warmup} warm-up + {args.steps} timed steps; "
               f"{args.workers} loader workers each{' (DRY RUN)' if args.dry_run else ''}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="tmzoo-gpu-") as tmp:
        tmp = Path(tmp)
        # --- reference, fp16
        items = [R.item_from_mol(ref, m, y, i) for i, (m, y) in enumerate(zip(mols, gaps))]
        trainer = FP16Reference(R, ref, shape, items, args.workers, device=device)
        trainer.model.to(device)
        trainer.loader = torch.utils.data.DataLoader(
            items, batch_size=shape.batch, shuffle=True, collate_fn=partial(R.collate, ref), num_workers=args.workers,
            persistent_workers=args.workers > 0, pin_memory=device.startswith("cuda"), drop_last=True,
        )
        results["reference"] = time_training(trainer, lambda b: int(b["x"].shape[0]), args.warmup, args.steps, device)
        results["reference"]["skipped"] = trainer.skipped
        del trainer, items
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        # --- tmzoo, its datamodule and default path, bf16-mixed, compiled encoder
        dm = bench.tmzoo_datamodule(Path(args.data), tmp / "cache", shape.batch, args.workers)
        trainer = bench.TmzooTrainer(shape, dm, args.precision, device=device)
        if compile_backend != "off" and not hasattr(trainer.task.encoder, "_orig_mod"):
            trainer.task.encoder = torch.compile(trainer.task.encoder, backend=compile_backend)
        results["tmzoo"] = time_training(trainer, lambda b: int(b.num_graphs), args.warmup, args.steps, device)
        del trainer, dm
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.empty_cache()

        for side in ("reference", "tmzoo"):
            bench.emit(f"gpu_train_mols_per_s_{side}", results[side]["mols_per_s"],
                       f"{results[side]['molecules']} molecules in {results[side]['seconds']:.2f} s")
        bench.emit("gpu_train_speedup_vs_reference", results["tmzoo"]["mols_per_s"] / results["reference"]["mols_per_s"],
                   "goal >= 2")
        bench.emit("gpu_train_published_recipe_mols_per_s_per_a100", float(PUBLISHED_A100), "for scale")
        if results["reference"]["skipped"]:
            bench.emit("gpu_train_reference_skipped_steps", results["reference"]["skipped"], "fp16 overflow")
        if device.startswith("cuda"):
            for side in ("reference", "tmzoo"):
                bench.emit(f"gpu_train_peak_memory_gb_{side}", results[side]["peak_gb"],
                           f"step above the resident state: {results[side]['step_gb']:.2f} GB")
            bench.emit("gpu_train_memory_vs_reference", results["tmzoo"]["peak_gb"] / results["reference"]["peak_gb"])

        # --- inference: SMILES text -> predictions, 2D, L12
        smiles = smiles[: n_infer or len(smiles)]
        text = tmp / "molecules.smi"
        text.write_text("\n".join(smiles) + "\n")
        model = bench.reference_model(R, ref, shape).to(device).eval()
        if device.startswith("cuda"):
            model.half()
        task = bench.tmzoo_task(shape)
        weights = bench.share_weights(model, task)
        checkpoint = tmp / "l12.ckpt"
        from tmzoo.checkpoints import save_bundle
        from tmzoo.cli.infer import run_inference

        save_bundle(task.tmzoo_spec(), {k: v.float() for k, v in task.state_dict().items()}, checkpoint)
        del task
        loader = torch.utils.data.DataLoader(
            bench.SmilesItems(R, ref, smiles), batch_size=bench.INFER_BATCH, collate_fn=partial(R.collate, ref),
            num_workers=args.workers, pin_memory=device.startswith("cuda"),
        )

        def reference_infer() -> float:
            t0 = time.perf_counter()
            with torch.no_grad():
                for batch in loader:
                    batch = {k: (v.to(device).half() if v.is_floating_point() and device.startswith("cuda") else
                                 v.to(device)) if torch.is_tensor(v) else v for k, v in batch.items()}
                    model(batched_data=batch)[0][:, 0, :].float().cpu()
            sync(device)
            return time.perf_counter() - t0

        def tmzoo_infer(r: int) -> float:
            t0 = time.perf_counter()
            run_inference(checkpoint, text, tmp / f"predictions{r}.csv", mode="2d", batch_size=bench.INFER_BATCH,
                          progress=False, workers=args.workers, device=device)
            return time.perf_counter() - t0

        times = bench.interleaved({"reference": lambda r: reference_infer(), "tmzoo": tmzoo_infer}, 2, warmup=1)
        bench.emit("gpu_infer_config", f"L{shape.layers}, {len(smiles)} SMILES -> predictions, 2D, batch "
                   f"{bench.INFER_BATCH}; reference fp16, tmzoo `tmzoo infer` defaults; weights {weights}")
        for side in ("reference", "tmzoo"):
            bench.emit(f"gpu_infer_mols_per_s_{side}", len(smiles) / min(times[side]), "best of 2 after a warm-up")
        bench.emit("gpu_infer_speedup_vs_reference", min(times["reference"]) / min(times["tmzoo"]))
    bench.emit("gpu_wall_s", time.perf_counter() - start)


if __name__ == "__main__":
    main()
