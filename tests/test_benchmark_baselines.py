"""The benchmark harness's own logic (never timings): bounds, round order, precision lookup.

The comparison itself needs the reference code (``../shared/reference``), which tests may not
use; these check the parts of ``benchmarks/run.py`` that decide what it prints.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import run  # noqa: E402


def test_rounds_alternate_and_warmup_is_dropped():
    calls = []

    def side(name):
        def f(r):
            calls.append((r, name))
            return float(r)
        return f

    times = run.interleaved({"a": side("a"), "b": side("b")}, rounds=3, warmup=1)
    assert calls == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b"), (3, "b"), (3, "a")]
    assert times == {"a": [1.0, 2.0, 3.0], "b": [1.0, 2.0, 3.0]}


def test_report_states_whether_the_bound_is_met(capsys):
    assert run.report("epoch_speedup_vs_reference", [1.0, 3.0, 2.5]) == 2.5
    assert "2.5 (bound >= 2.0: met;" in capsys.readouterr().out
    run.report("l12_step_memory_vs_reference", [0.9])
    assert "(bound <= 0.8: NOT met;" in capsys.readouterr().out
    run.report("featurize_us_per_mol_tmzoo", [5.0, 7.0])
    assert "bound" not in capsys.readouterr().out


def test_ratios_are_paired_by_round():
    assert run.ratios([4.0, 9.0], [2.0, 3.0]) == [2.0, 3.0]


def test_precision_comes_from_the_shipped_recipe():
    assert run.tmzoo_precision("32-true") == "32-true"
    assert run.tmzoo_precision("auto") in ("32-true", "32", "bf16-mixed", "16-mixed")


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_forward_context_is_lightnings(precision):
    import torch

    with run.forward_context(precision):
        out = torch.ones(2, 2) @ torch.ones(2, 2)
    assert out.dtype == (torch.bfloat16 if precision == "bf16-mixed" else torch.float32)


def test_without_reference_it_says_so_and_stops():
    out = subprocess.run([sys.executable, str(BENCH / "run.py"), "--quick"], capture_output=True, text=True,
                         check=True, timeout=300).stdout
    assert "machine:" in out and "load_average_at_start:" in out
    assert "reference: not given" in out
