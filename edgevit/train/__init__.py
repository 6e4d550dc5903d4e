"""Training: one loop (`Trainer`) driving a task (plain, or DeiT distillation) with hooks."""

from edgevit.train.evaluate import evaluate
from edgevit.train.tasks import (
    AttentionDistillationTask,
    ClassificationTask,
    DistillationTask,
    FeatureDistillationTask,
    TeacherLogits,
)
from edgevit.train.trainer import DistInfo, Hooks, TrainConfig, Trainer, init_distributed

__all__ = [
    "AttentionDistillationTask",
    "ClassificationTask",
    "DistillationTask",
    "FeatureDistillationTask",
    "DistInfo",
    "Hooks",
    "TeacherLogits",
    "TrainConfig",
    "Trainer",
    "evaluate",
    "init_distributed",
]
