"""Released Transformer-M checkpoints (fairseq layout) → tmzoo modules.

The architecture is read off the weights (layers, width, FFN, heads, kernels, 3D on/off);
every tensor is mapped by name, and any key left over or missing is an error.
"""

from __future__ import annotations

import re

from torch import Tensor

from tmzoo.checkpoints.safe_pickle import Placeholder

ENCODER_PREFIX = "encoder.molecule_encoder."
GAP_HEAD_KEYS = ("lm_head_transform_weight", "layer_norm", "embed_out", "lm_output_learned_bias")


def is_official(checkpoint: dict) -> bool:
    """A released file keeps its weights under ``model`` with fairseq key names."""
    model = checkpoint.get("model") if isinstance(checkpoint, dict) else None
    return isinstance(model, dict) and any(k.startswith(ENCODER_PREFIX) for k in model)


def _model_args(checkpoint: dict) -> dict:
    """Hyper-parameters stored beside the weights (``cfg.model`` or ``args``), as a dict."""
    for source in (checkpoint.get("cfg", {}) or {}).get("model"), checkpoint.get("args"):
        if isinstance(source, Placeholder):
            return {k: v for k, v in vars(source).items() if not k.startswith("_")}
        if isinstance(source, dict):
            return dict(source)
    return {}


def official_module_name(key: str) -> str:
    """tmzoo name of one released-checkpoint key (raises ``KeyError`` when unknown)."""
    for old, new in ((ENCODER_PREFIX + "atom_proc.", "denoising_head."), (ENCODER_PREFIX, "encoder."),
                     ("encoder.proj_out.", "head.")):
        if key.startswith(old):
            return new + key.removeprefix(old)
    rest = key.removeprefix("encoder.")
    if rest.split(".")[0] in GAP_HEAD_KEYS:
        return "gap_head." + rest
    raise KeyError(key)


def convert_official(checkpoint: dict) -> tuple[dict, dict[str, Tensor]]:
    """``(spec, state_dict)`` in tmzoo's layout for a released checkpoint dict."""
    unknown = []
    state: dict[str, Tensor] = {}
    for key, value in checkpoint["model"].items():
        try:
            state[official_module_name(key)] = value
        except KeyError:
            unknown.append(key)
    if unknown:
        raise ValueError(f"released checkpoint has keys tmzoo cannot map: {unknown[:10]}")

    enc = {k[len("encoder.") :]: v for k, v in state.items() if k.startswith("encoder.")}
    layers = {int(m.group(1)) for k in enc if (m := re.match(r"layers\.(\d+)\.", k))}
    args = _model_args(checkpoint)
    use_3d = any(k.startswith("molecule_3d_bias.") for k in enc)
    try:
        mode_probs = [float(p) for p in str(args.get("mode_prob", "0.2,0.2,0.6")).split(",")]
    except ValueError:
        mode_probs = []
    if not (len(mode_probs) == 3 and abs(sum(mode_probs) - 1) < 1e-6):
        mode_probs = [0.2, 0.2, 0.6]
    encoder = {
        "num_layers": len(layers),
        "embed_dim": int(enc["atom_feature.atom_encoder.weight"].shape[1]),
        "ffn_dim": int(enc["layers.0.fc1.weight"].shape[0]),
        "num_heads": int(enc["molecule_attn_bias.spatial_pos_encoder.weight"].shape[1]),
        "num_kernels": int(enc["molecule_3d_bias.gbf.means.weight"].shape[1]) if use_3d else 128,
        "use_2d": not bool(args.get("no_2d", False)),
        "use_3d": use_3d,
        "mode_probs": mode_probs,
        "dropout": float(args.get("dropout", 0.0) or 0.0),
        "attention_dropout": float(args.get("attention_dropout", 0.1) or 0.0),
        "activation_dropout": float(args.get("act_dropout", 0.1) or 0.0),
        "droppath": float(args.get("droppath_prob", 0.1) or 0.0),
        "multi_hop_max_dist": int(args.get("multi_hop_max_dist", 5)),
        "reference_compatible": True,
        "embed_layer_norm": "emb_layer_norm.weight" in enc,
    }
    modules = {"encoder": {"class_path": "tmzoo.models.TransformerM", "init_args": encoder}}
    present = {k.split(".", 1)[0] for k in state}
    c = encoder["embed_dim"]
    if "gap_head" in present:
        modules["gap_head"] = {"class_path": "tmzoo.models.GapHead", "init_args": {"embed_dim": c}}
    if "denoising_head" in present:
        init_args = {"embed_dim": c, "num_heads": encoder["num_heads"]}
        modules["denoising_head"] = {"class_path": "tmzoo.models.DenoisingHead", "init_args": init_args}
    if "head" in present:
        init_args = {"embed_dim": c, "num_targets": int(state["head.out_proj.weight"].shape[0])}
        modules["head"] = {"class_path": "tmzoo.models.GraphRegressionHead", "init_args": init_args}
    spec = {
        "format": 1,
        "task": "regression" if "head" in modules else "pretraining",
        "modules": modules,
        "featurization": {"max_hops": encoder["multi_hop_max_dist"], "reference_compatible": True, "hydrogens": False},
        "source": "released Transformer-M checkpoint",
    }
    return spec, state
