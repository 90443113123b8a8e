"""Training: config (YAML dataclasses), statistics (E0s, normalisation), losses,
metrics, the explicit training loop, safetensors checkpoints and committees."""

from .checkpoint import CheckpointError
from .committee import train_committee
from .config import Config, ConfigError, load_config
from .losses import LossWeights, TrainingError
from .statistics import fit_e0s, read_isolated_atoms
from .trainer import TrainResult, train

__all__ = [
    "CheckpointError",
    "Config",
    "ConfigError",
    "LossWeights",
    "TrainResult",
    "TrainingError",
    "fit_e0s",
    "load_config",
    "read_isolated_atoms",
    "train",
    "train_committee",
]
