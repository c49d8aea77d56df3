"""The ``tmzoo`` command: ``infer``, ``convert`` and ``sweep`` here; ``fit``/``validate``/
``test``/``predict`` go to Lightning's CLI."""

from __future__ import annotations

import importlib
import sys

USAGE = """usage: tmzoo {fit,validate,test,predict,infer,convert,sweep} ...

  fit|validate|test|predict   Lightning CLI (tmzoo fit --config experiments/X.yaml --config datamodules/Y.yaml)
  infer                       predict a .sdf/.smi/.csv file with a checkpoint
  convert                     released Transformer-M checkpoint -> tmzoo checkpoint
  sweep                       run a W&B sweep file locally, offline
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] in ("infer", "convert", "sweep"):
        return importlib.import_module(f"tmzoo.cli.{argv[0]}").main(argv[1:]) or 0
    from tmzoo.cli.lightning import run_lightning_cli

    run_lightning_cli(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
