"""Transformer-M pretraining step (forward + backward), tmzoo vs the naive baseline.

Both variants share: the PyG batches (real PCQM4Mv2 molecules with DFT coordinates), the
per-molecule modes, the coordinate noise (σ = 0.2 Å), the weights (the naive encoder loads
tmzoo's ``state_dict``), the heads (tmzoo's ``GapHead`` and ``DenoisingHead``) and the loss:
gap L1 + denoising ``1 − cos`` on 3D-only molecules, both summed over molecules and divided
by the batch size.

Run as a script, one variant per fresh process, to measure peak memory of the step::

    python benchmarks/train_step.py --variant tmzoo --config '{"num_layers": 12, ...}'

prints one JSON line. See ``README.md`` for how memory is measured.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch
from torch_geometric.utils import to_dense_batch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import load_3d_molecules  # noqa: E402
from naive_transformer_m import NaiveTransformerM  # noqa: E402

from tmzoo.chem.molecule import mol_to_data  # noqa: E402
from tmzoo.data.transforms import transformer_m_transform  # noqa: E402
from tmzoo.models import DenoisingHead, GapHead, TransformerM  # noqa: E402

NOISE_STD = 0.2


@dataclass
class StepConfig:
    num_layers: int = 12
    embed_dim: int = 768
    ffn_dim: int = 768
    num_heads: int = 32
    num_kernels: int = 128
    batch_size: int = 32
    num_batches: int = 2
    dropout: float = 0.0
    attention_dropout: float = 0.1
    activation_dropout: float = 0.1
    droppath: float = 0.1
    seed: int = 0
    bf16: bool = False  # bf16 autocast for the step (CUDA figures)

    def describe(self) -> str:
        return (
            f"L{self.num_layers} C{self.embed_dim} F{self.ffn_dim} H{self.num_heads} K{self.num_kernels}, "
            f"batch {self.batch_size}, attn/act dropout {self.attention_dropout}/{self.activation_dropout}, "
            f"droppath {self.droppath}" + (", bf16 autocast" if self.bf16 else ", fp32")
        )

    def model_kwargs(self, regularised: bool = True) -> dict:
        keys = ("num_layers", "embed_dim", "ffn_dim", "num_heads", "num_kernels")
        kwargs = {k: getattr(self, k) for k in keys}
        for k in ("dropout", "attention_dropout", "activation_dropout", "droppath"):
            kwargs[k] = getattr(self, k) if regularised else 0.0
        return kwargs


# ----------------------------------------------------------------------------- inputs
@dataclass
class StepInputs:
    batch: Batch  # coordinates already noised
    modes: torch.Tensor  # [B]
    noise: torch.Tensor  # [B, N, 3] dense noise (zero on padding)
    y: torch.Tensor  # [B]


def make_inputs(cfg: StepConfig, offset: int = 0) -> list[StepInputs]:
    """``cfg.num_batches`` batches of consecutive real molecules, with modes and noise fixed."""
    need = cfg.batch_size * cfg.num_batches
    mols = load_3d_molecules(need + offset)[offset:]
    transform = transformer_m_transform()
    datas = [transform(mol_to_data(m)) for m in mols]
    gen = torch.Generator().manual_seed(cfg.seed)
    out = []
    for i in range(cfg.num_batches):
        batch = Batch.from_data_list(datas[i * cfg.batch_size : (i + 1) * cfg.batch_size])
        b = batch.num_graphs
        has_pos = batch.has_pos.view(-1)
        flat_noise = torch.randn(batch.pos.shape, generator=gen) * NOISE_STD
        flat_noise = flat_noise * has_pos[batch.batch].unsqueeze(-1)
        batch.pos = batch.pos + flat_noise
        noise, _ = to_dense_batch(flat_noise, batch.batch, batch_size=b)
        modes = torch.multinomial(torch.tensor([0.2, 0.2, 0.6]), b, replacement=True, generator=gen)
        y = torch.rand(b, generator=gen) * 4 + 3  # a gap-like target in eV; only the loss needs it
        out.append(StepInputs(batch, modes, noise, y))
    return out


# ----------------------------------------------------------------------------- models
class Pretrainer(torch.nn.Module):
    """Encoder + tmzoo heads + the pretraining loss."""

    def __init__(self, encoder: torch.nn.Module, embed_dim: int, num_heads: int, attention_dropout: float):
        super().__init__()
        self.encoder = encoder
        self.gap_head = GapHead(embed_dim)
        self.denoising_head = DenoisingHead(embed_dim, num_heads, attention_dropout)

    def forward(self, inputs: StepInputs) -> torch.Tensor:
        out = self.encoder(inputs.batch, inputs.modes)
        b = out.tokens.shape[0]
        gap = self.gap_head(out).squeeze(-1)
        l1 = (gap - inputs.y).abs().sum()
        pred = self.denoising_head(out)  # [B, N, 3]
        mask = out.atom_mask.to(pred.dtype)
        cos = F.cosine_similarity(pred, inputs.noise.to(pred.dtype), dim=-1)
        per_molecule = ((1 - cos) * mask).sum(1) / mask.sum(1).clamp(min=1)
        only_3d = (out.modes == 2).to(pred.dtype)
        return (l1 + (per_molecule * only_3d).sum()) / b


def build(cfg: StepConfig, variant: str, regularised: bool = True) -> Pretrainer:
    """Both variants get the same weights (seeded tmzoo init, loaded into the naive encoder)."""
    torch.manual_seed(cfg.seed)
    kwargs = cfg.model_kwargs(regularised)
    ref = Pretrainer(TransformerM(**kwargs), cfg.embed_dim, cfg.num_heads, kwargs["attention_dropout"])
    ref.bf16 = cfg.bf16
    if variant == "tmzoo":
        return ref
    naive = Pretrainer(NaiveTransformerM(**kwargs), cfg.embed_dim, cfg.num_heads, kwargs["attention_dropout"])
    naive.load_state_dict(ref.state_dict())
    naive.bf16 = ref.bf16
    return naive


def step(model: Pretrainer, inputs: StepInputs) -> torch.Tensor:
    device = inputs.y.device.type
    with torch.autocast(device, dtype=torch.bfloat16, enabled=getattr(model, "bf16", False)):
        loss = model(inputs)
    loss.backward()
    return loss.detach()


# ----------------------------------------------------------------------------- parity
def parity(cfg: StepConfig) -> tuple[float, float, float]:
    """Max |Δloss|, max |Δgrad| and max |grad| of the variants, regularisation off (deterministic)."""
    inputs = make_inputs(StepConfig(**{**asdict(cfg), "num_batches": 1}))[0]
    results = []
    for variant in ("tmzoo", "naive"):
        model = build(cfg, variant, regularised=False).train()
        loss = step(model, inputs)
        grads = {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}
        results.append((loss, grads))
    (l_a, g_a), (l_b, g_b) = results
    if set(g_a) != set(g_b):
        raise RuntimeError(f"gradient keys differ: {sorted(set(g_a) ^ set(g_b))}")
    grad_diff = max(float((g_a[k] - g_b[k]).abs().max()) for k in g_a)
    grad_max = max(float(g_a[k].abs().max()) for k in g_a)
    return float((l_a - l_b).abs()), grad_diff, grad_max


# ----------------------------------------------------------------------------- timing
def time_steps(cfg: StepConfig, repeats: int, device: str = "cpu") -> dict:
    """Molecules/s of both variants and the speedup; every round runs both, order alternating."""
    inputs = make_inputs(cfg)
    if device != "cpu":
        inputs = [_to(x, device) for x in inputs]
    models = {v: build(cfg, v).to(device).train() for v in ("tmzoo", "naive")}
    times: dict[str, list[float]] = {v: [] for v in models}
    for r in range(repeats + 1):  # the first round warms up
        for v in (("tmzoo", "naive") if r % 2 == 0 else ("naive", "tmzoo")):
            model = models[v]
            _sync(device)
            t0 = time.perf_counter()
            for x in inputs:
                model.zero_grad(set_to_none=True)
                step(model, x)
            _sync(device)
            if r:
                times[v].append(time.perf_counter() - t0)
    # rates: median round; speedup: median of the per-round ratios (the two runs of a round
    # are adjacent in time, so a change in load from other processes mostly cancels)
    molecules = cfg.batch_size * cfg.num_batches
    rates = {v: molecules / statistics.median(t) for v, t in times.items()}
    rates["speedup"] = statistics.median(n / t for n, t in zip(times["naive"], times["tmzoo"]))
    return rates


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _to(x: StepInputs, device: str) -> StepInputs:
    return StepInputs(x.batch.to(device), x.modes.to(device), x.noise.to(device), x.y.to(device))


# ----------------------------------------------------------------------------- memory
def _rss_kb() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _hwm_kb() -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ≥ 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def measure_memory(cfg: StepConfig, variant: str, steps: int, device: str = "cpu") -> dict:
    """Peak memory of ``steps`` training steps above what is held before them.

    Setup (data, model, one warm-up step so that gradients exist, zeroed in place) is done
    first; then on CPU the peak-RSS counter is reset and the steps run; the figure is
    peak RSS minus RSS before the steps. On CUDA: ``max_memory_allocated`` minus
    ``memory_allocated`` before the steps.
    """
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    inputs = make_inputs(cfg)
    model = build(cfg, variant).to(device).train()
    if device != "cpu":
        inputs = [_to(x, device) for x in inputs]
    step(model, inputs[0])
    model.zero_grad(set_to_none=False)
    _trim()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = _rss_kb() * 1024
        exact = _reset_peak()
    for i in range(steps):
        model.zero_grad(set_to_none=False)
        step(model, inputs[i % len(inputs)])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        how = "cuda max_memory_allocated"
    else:
        peak = _hwm_kb() * 1024
        how = "VmHWM after clear_refs" if exact else "ru_maxrss (includes setup peaks)"
    return {"variant": variant, "step_bytes": peak - before, "before_bytes": before, "how": how}


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=("tmzoo", "naive"), required=True)
    parser.add_argument("--config", default="{}", help="StepConfig fields as JSON")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cfg = StepConfig(**json.loads(args.config))
    print(json.dumps(measure_memory(cfg, args.variant, args.steps, args.device)))


if __name__ == "__main__":
    main()
