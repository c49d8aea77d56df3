"""Shipped configs by name, and delta configs (``# extends: BASE``) that resolve to full ones."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tmzoo.cli.lightning import run_lightning_cli
from tmzoo.configs import available, resolve, resolve_config_args, with_bases

ROOT = Path(__file__).resolve().parents[1]
#: the full files these deltas replaced (as they were before), beside the delta's base
FULL = ROOT / "tests" / "fixtures" / "configs"


def printed_config(capsys, *configs: str) -> dict:
    with pytest.raises(SystemExit):
        run_lightning_cli(["fit", *(a for c in configs for a in ("--config", c)), "--config", "qm9_demo", "--print_config"])
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(p.stem for p in FULL.glob("*.yaml")))
def test_delta_resolves_to_the_full_config_it_replaced(name, capsys):
    assert with_bases(name) == [str(available()["transformer_m_L12"]), str(available()[name])]
    assert printed_config(capsys, name) == printed_config(capsys, str(FULL / f"{name}.yaml"))


def test_bases_come_first_recursively_from_names_or_paths_beside_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("# extends: transformer_m_small\ntrainer: {max_epochs: 1}\n")
    (tmp_path / "b.yaml").write_text("# extends: a.yaml\ntrainer: {max_epochs: 2}\n")
    small, a, b = str(available()["transformer_m_small"]), str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")
    assert resolve_config_args(["fit", "-c", b, "--config=qm9_demo"]) == [
        "fit", f"--config={small}", f"--config={a}", f"--config={b}", f"--config={available()['qm9_demo']}"]
    assert resolve_config_args(["fit", "--config"]) == ["fit", "--config"]


def test_a_cycle_of_bases_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("# extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("# extends: a.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        with_bases(str(tmp_path / "a.yaml"))


def test_a_unique_file_name_names_a_shipped_config():
    assert resolve("wandb") == str(available()["loggers/wandb"])
    assert resolve("qm9") == str(available()["qm9"])  # the datamodule, not finetune/qm9
    with pytest.raises(ValueError, match="no shipped config"):
        resolve("no_such_config")
