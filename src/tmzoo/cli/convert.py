"""``tmzoo convert OFFICIAL.pt OUT.ckpt``: a released Transformer-M file → tmzoo checkpoint."""

from __future__ import annotations

import argparse
import sys

from tmzoo.checkpoints import convert_checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tmzoo convert", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="released Transformer-M checkpoint (fairseq layout)")
    parser.add_argument("target", help="tmzoo checkpoint to write")
    args = parser.parse_args(argv)
    try:
        spec = convert_checkpoint(args.source, args.target)
    except (FileNotFoundError, ValueError, OSError) as err:
        print(f"tmzoo convert: error: {err}", file=sys.stderr)
        return 2
    enc = spec["modules"]["encoder"]["init_args"]
    print(
        f"tmzoo convert: {args.source} -> {args.target} "
        f"({enc['num_layers']} layers, width {enc['embed_dim']}, FFN {enc['ffn_dim']}, "
        f"{enc['num_heads']} heads, {enc['num_kernels']} kernels, 3D {'on' if enc['use_3d'] else 'off'}; "
        f"heads: {', '.join(k for k in spec['modules'] if k != 'encoder')})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
