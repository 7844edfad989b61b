"""hass: lossless speculative decoding with HASS / EAGLE-2 draft models over any Hugging Face causal LM."""
from .config import SamplingConfig, TreeConfig
from .draft import DraftModel
from .errors import CheckpointError, DraftMismatchError
from .generation import GenerationOutput, HassModel

__all__ = [
    "CheckpointError",
    "DraftMismatchError",
    "DraftModel",
    "GenerationOutput",
    "HassModel",
    "SamplingConfig",
    "TreeConfig",
]
__version__ = "0.1.0"
