"""The reference MobileViTV2: config, blocks, heads, checkpoint loading, preprocessing."""

from .checkpoint import CheckpointInfo, default_config, load_model
from .config import TASKS, MobileViTV2Config
from .heads import (
    MODEL_CLASSES,
    MobileViTV2ForImageClassification,
    MobileViTV2ForSemanticSegmentation,
    MobileViTV2Model,
    build_model,
)
from .preprocess import Preprocessor

__all__ = [
    "TASKS",
    "MODEL_CLASSES",
    "CheckpointInfo",
    "MobileViTV2Config",
    "MobileViTV2ForImageClassification",
    "MobileViTV2ForSemanticSegmentation",
    "MobileViTV2Model",
    "Preprocessor",
    "build_model",
    "default_config",
    "load_model",
]
