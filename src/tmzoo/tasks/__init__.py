"""LightningModules assembled from parts: an encoder, head factories, optimizer and schedule."""

from tmzoo.tasks.base import MoleculeTask, set_mode_probs
from tmzoo.tasks.data_info import describe_data
from tmzoo.tasks.pretrained import build_pretrained_encoder, load_pretrained_encoder, read_encoder_state
from tmzoo.tasks.pretraining import Pretraining, add_coordinate_noise, denoising_loss
from tmzoo.tasks.regression import Affinity, Regression
from tmzoo.tasks.schedules import WarmupLinearDecay
from tmzoo.tasks.writer import PredictionWriter

__all__ = [
    "Affinity",
    "MoleculeTask",
    "PredictionWriter",
    "Pretraining",
    "Regression",
    "WarmupLinearDecay",
    "add_coordinate_noise",
    "build_pretrained_encoder",
    "denoising_loss",
    "describe_data",
    "load_pretrained_encoder",
    "read_encoder_state",
    "set_mode_probs",
]
