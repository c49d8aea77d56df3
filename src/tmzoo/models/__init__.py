"""Models: the Transformer-M encoder, its parts and heads."""

from tmzoo.models.heads import DenoisingHead, GapHead, GraphRegressionHead
from tmzoo.models.output import EncoderOutput
from tmzoo.models.transformer_m import TransformerM
from tmzoo.modes import Mode

__all__ = [
    "DenoisingHead",
    "EncoderOutput",
    "GapHead",
    "GraphRegressionHead",
    "Mode",
    "TransformerM",
]
