"""Structured pruning: physical removal, importance by name, proof of gain, bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import make_dataset
from torch import nn

from edgekd.compress.prune import (
    IMPORTANCES,
    LatencyComparison,
    PruneConfig,
    find_classifier,
    prune_channels,
    prune_structured,
    speed_verdict,
)
from edgekd.distill.trainer import TrainConfig, accuracy, train
from edgekd.errors import EdgekdError
from edgekd.models.budget import count_macs


class SmallCNN(nn.Module):
    def __init__(self, classes: int = 3, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        )
        self.classifier = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


class HardCodedReshape(nn.Module):
    """Flattens with a fixed channel count: after pruning the reshape no longer fits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 32, 3, padding=1)
        self.head = nn.Linear(32 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).reshape(-1, 32 * 8 * 8))


@pytest.fixture(scope="module")
def trained():
    data = make_dataset(n_train=256, n_test=64, shape=(1, 8, 8), classes=3)
    torch.manual_seed(0)
    model = train(SmallCNN(), data, TrainConfig(epochs=3, lr=1e-2), progress=False).model
    return data, model


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_unit_interval_is_rejected(trained, ratio):
    data, model = trained
    with pytest.raises(EdgekdError, match=r"pruning ratio must lie in \[0, 1\)"):
        prune_structured(model, None, data, PruneConfig(ratio=ratio))


def test_channels_are_physically_removed_and_rounded(trained):
    data, model = trained
    m = copy.deepcopy(model)
    x = torch.from_numpy(data.x_val[:1])
    before = count_macs(m, data.input_shape)
    prune_channels(m, x, 0.5, find_classifier(m, 3), channel_multiple=8)
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 and c.out_channels < 32 for c in convs)
    assert m.classifier.out_features == 3 and m.classifier.in_features == convs[-1].out_channels
    assert count_macs(m, data.input_shape) < 0.5 * before
    assert m(torch.from_numpy(data.x_val)).shape == (len(data.y_val), 3)


def test_untraceable_model_names_the_layer():
    data = make_dataset(n_train=32, shape=(1, 8, 8))
    with pytest.raises(EdgekdError, match="layer 'conv'"):
        prune_channels(HardCodedReshape(), torch.from_numpy(data.x_val[:1]), 0.5, nn.Linear(1, 1), 8)


@pytest.mark.slow
def test_iterative_pruning_keeps_proven_steps_by_size(trained):
    data, model = trained
    result = prune_structured(model, model, data, PruneConfig(
        ratio=0.5, steps=1, finetune_epochs=1, max_accuracy_drop=1.0, objective="size"))
    assert len(result.steps) >= 1 and result.kept_step >= 1
    assert result.macs < result.base_macs and result.macs_removed > 0.3
    assert all(s.kept for s in result.steps) and "size" in result.steps[0].reason
    assert count_macs(model, data.input_shape) == result.base_macs  # the input model is untouched
    d = result.to_dict()
    assert d["steps"][0]["macs_after"] < d["steps"][0]["macs_before"]


def test_unreachable_accuracy_floor_keeps_the_student_and_explains(trained):
    data, _ = trained
    torch.manual_seed(1)
    untrained = SmallCNN()
    assert accuracy(untrained, data.x_val, data.y_val) < 0.99
    result = prune_structured(untrained, None, data, PruneConfig(ratio=0.5, accuracy_floor=0.99))
    assert result.kept_step == 0 and result.steps == []
    assert "below the accuracy floor" in result.summary
    assert result.macs == result.base_macs


def test_accuracy_floor_stops_the_loop(trained):
    data, model = trained
    result = prune_structured(model, None, data, PruneConfig(
        ratio=0.9, steps=1, finetune_epochs=0, max_accuracy_drop=0.0, objective="size"))
    step = result.steps[0]
    if step.val_accuracy < result.base_val_accuracy:
        assert not step.kept and "below the floor" in step.reason
        assert result.kept_step == 0 and result.macs == result.base_macs
        assert "pruning rejected" in result.summary


def test_speed_verdict_requires_gain_beyond_noise():
    fast = LatencyComparison(1.0, 0.8, [0.79, 0.8, 0.81], 0.2, 0.01, 3, 1)
    noisy = LatencyComparison(1.0, 0.95, [0.7, 0.95, 1.2], 0.05, 0.2, 3, 1)
    assert speed_verdict(fast, 0.03)[0]
    ok, why = speed_verdict(noisy, 0.03)
    assert not ok and "noise" in why


@pytest.mark.parametrize("importance", sorted(IMPORTANCES))
def test_every_importance_removes_channels(trained, importance):
    data, model = trained
    pruned = prune_channels(copy.deepcopy(model), torch.from_numpy(data.x_val[:1]), 0.5, model.classifier, 8,
                            importance, (torch.from_numpy(data.x_train[:16]), torch.from_numpy(data.y_train[:16])))
    assert pruned.features[0].out_channels == 16
    assert pruned(torch.from_numpy(data.x_val[:2])).shape == (2, 3)


def test_unknown_importance_is_bad_input():
    with pytest.raises(EdgekdError, match="unknown pruning importance 'nope'"):
        PruneConfig(importance="nope").validate()
