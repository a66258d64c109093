"""The nested training loop and `nlc train` (``nldsl.runtime.train``)."""

from .loop import Diverged, NestedLoop, StepResult
from .run import TrainConfig, Trainer, TrainInputError

__all__ = ["Diverged", "NestedLoop", "StepResult", "TrainConfig", "Trainer", "TrainInputError"]
