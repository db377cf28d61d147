"""Training flows: the loop, its schedule, checkpoints, metrics, DDP plumbing, plots and quality baselines.

    >>> from nf_kernels.training import TrainConfig
    >>> TrainConfig(steps=200, batch_size=128, dtype="bf16").dtype
    'bf16'
"""

from .batches import BatchStream
from .checkpoint import CheckpointError, load_checkpoint, save_atomically
from .distributed import DistributedContext, init_distributed, shutdown_distributed
from .metrics import MetricsError, MetricsLog
from .objective import LogProb, evaluate, loss_from_log_prob, metric_name
from .optimizer import make_adam
from .schedule import make_scheduler, warmup_cosine
from .trainer import TrainConfig, TrainConfigError, Trainer, TrainingDiverged, TrainResult

__all__ = [
    "BatchStream", "CheckpointError", "DistributedContext", "LogProb", "MetricsError", "MetricsLog", "TrainConfig",
    "TrainConfigError", "TrainResult", "Trainer", "TrainingDiverged", "evaluate", "init_distributed",
    "load_checkpoint", "loss_from_log_prob", "make_adam", "make_scheduler", "metric_name", "save_atomically",
    "shutdown_distributed", "warmup_cosine",
]  # fmt: skip
