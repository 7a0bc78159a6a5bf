"""The training loop shared by teacher training, distillation and the trained-alone baseline.

Teacher outputs are computed once up front when inputs don't change between epochs (no augmentation):
the teacher then costs one forward pass over the data instead of one per epoch.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from edgekd.data import Dataset
from edgekd.distill.losses import LossInputs, LossMix
from edgekd.models.teachers import predict_logits


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    temperature: float = 4.0
    loss_weights: dict[str, float] = field(default_factory=lambda: {"kd": 0.7, "ce": 0.3})
    seed: int = 0
    label: str = "student"


@dataclass
class TrainResult:
    model: nn.Module
    best_val_accuracy: float
    best_epoch: int
    history: list[dict]
    train_time_s: float
    teacher_time_s: float
    config: TrainConfig

    def summary(self) -> dict:
        return {
            "best_val_accuracy": self.best_val_accuracy,
            "best_epoch": self.best_epoch,
            "epochs": self.config.epochs,
            "train_time_s": round(self.train_time_s, 3),
            "teacher_time_s": round(self.teacher_time_s, 3),
            "teacher_time_share": round(self.teacher_time_s / max(self.train_time_s, 1e-9), 4),
            "loss_weights": self.config.loss_weights,
            "temperature": self.config.temperature,
        }


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return 0.0
    return float((predict_logits(model, x).argmax(1) == y).mean())


def train(
    model: nn.Module,
    data: Dataset,
    config: TrainConfig,
    teacher: nn.Module | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` with the configured loss mix; keep the weights of the best validation epoch."""
    torch.manual_seed(config.seed)
    mix = LossMix(config.loss_weights if teacher is not None else {"ce": 1.0}, config.temperature)
    start = time.perf_counter()
    teacher_time = 0.0
    teacher_logits = None
    if teacher is not None and mix.needs_teacher:
        t0 = time.perf_counter()
        teacher_logits = torch.from_numpy(predict_logits(teacher, data.x_train))
        teacher_time = time.perf_counter() - t0
    x_train = torch.from_numpy(data.x_train)
    y_train = torch.from_numpy(data.y_train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, (len(y_train) + config.batch_size - 1) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(config.seed)
    best_state, best_acc, best_epoch, history = copy.deepcopy(model.state_dict()), -1.0, 0, []
    bar = tqdm(range(config.epochs), desc=f"train {config.label}", unit="epoch", disable=not progress, leave=False)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        total, parts_sum = 0.0, {}
        for i in range(0, len(order), config.batch_size):
            idx = order[i : i + config.batch_size]
            logits = model(x_train[idx])
            batch = LossInputs(logits, y_train[idx], None if teacher_logits is None else teacher_logits[idx])
            loss, parts = mix(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * len(idx)
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v * len(idx)
        val_acc = accuracy(model, data.x_val, data.y_val)
        n = len(y_train)
        history.append(
            {"epoch": epoch + 1, "loss": total / n, **{f"loss_{k}": v / n for k, v in parts_sum.items()},
             "val_accuracy": val_acc}
        )
        if val_acc >= best_acc:  # ties go to the later, better-converged epoch
            best_acc, best_epoch, best_state = val_acc, epoch + 1, copy.deepcopy(model.state_dict())
        bar.set_postfix(loss=f"{total / n:.3f}", val=f"{val_acc:.3f}", best=f"{best_acc:.3f}")
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_acc, best_epoch, history, time.perf_counter() - start, teacher_time, config)
