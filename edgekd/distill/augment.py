"""Train-time augmentation as batch transforms, registered by name, and the two ways a teacher teaches through it.

A run names its augmentation in ``TrainConfig.augment`` (``--augment crop,flip`` or the ``--distill-config``
YAML), e.g. ``["crop", "flip", "mixup"]`` plus per-transform options in ``augment_options``. Each transform takes
the batch's ``View`` (inputs, hard labels, mixed label targets) and the trainer's seeded generator, so a seeded
run is reproducible and a resumed one continues bit-identically. The student trained alone gets the same
augmentation as the distilled one (the config is shared), so the KD gain compares like with like.

Teaching (``TrainConfig.teaching``):

* ``consistent`` (Beyer et al., *Knowledge distillation: A good teacher is patient and consistent*, CVPR 2022):
  the teacher runs on the very view the student sees, every batch. Better targets; costs a teacher forward pass
  per batch.
* ``cached``: the teacher's outputs are computed once on the un-augmented inputs and reused every epoch while the
  student sees augmented views. Cheap; under mixup/cutmix the cached soft targets of the two mixed samples are
  mixed in probability space (exact for what KD reads at the mix's temperature; feature maps are mixed linearly,
  an approximation).

``DEFAULT_TEACHING`` is chosen from a measurement (docs/architecture.md, "Distillation"). Without augmentation both
modes are the same computation and the teacher's outputs are cached.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from edgekd.errors import EdgekdError

TEACHING_MODES = ("cached", "consistent")
# Measured (docs/architecture.md, "Distillation"): on CIFAR-10 with crop+flip, consistent teaching was selected on
# validation over cached (+1.25 val points, +0.58 test points, both seeds) for ~1.5x the cached KD epoch time.
DEFAULT_TEACHING = "consistent"


@dataclass
class View:
    """One training batch as the student sees it.

    ``labels``: hard class ids (under mixing the dominant sample's, for losses that index by class such as DKD).
    ``soft_labels``: the mixed one-hot targets cross-entropy trains on under mixup/cutmix (None: ``labels``).
    ``mixing``: (partner index, weight of the original) so cached teacher outputs can be mixed the same way.
    """

    x: torch.Tensor
    labels: torch.Tensor
    soft_labels: torch.Tensor | None = None
    mixing: tuple[torch.Tensor, float] | None = None

    def mix_teacher(self, logits: list[torch.Tensor], features: dict[str, torch.Tensor],
                    temperature: float) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        """Cached teacher outputs (of the un-mixed samples) mixed like the inputs; unchanged without mixing."""
        if self.mixing is None:
            return logits, features
        perm, lam = self.mixing
        perm = perm.to(logits[0].device) if logits else perm
        mixed = []
        for z in logits:  # T * log(lam p_T(a) + (1-lam) p_T(b)): softmax at T gives exactly the mixed targets
            p = lam * torch.softmax(z.float() / temperature, 1) + (1 - lam) * torch.softmax(z[perm].float() /
                                                                                            temperature, 1)
            mixed.append(temperature * p.clamp_min(1e-12).log())
        return mixed, {k: lam * v + (1 - lam) * v[perm.to(v.device)] for k, v in features.items()}


BatchTransform = Callable[[View, torch.Generator], View]


@dataclass(frozen=True)
class AugmentSpec:
    """A registry row. ``images_only``: undefined on feature vectors (refused there). ``mixes``: mixes samples."""

    name: str
    factory: Callable[..., BatchTransform]
    images_only: bool
    mixes: bool
    about: str


AUGMENTS: dict[str, AugmentSpec] = {}


def register_augment(name: str, *, images_only: bool, mixes: bool = False, about: str = ""):
    def deco(factory: Callable[..., BatchTransform]) -> Callable[..., BatchTransform]:
        AUGMENTS[name] = AugmentSpec(name, factory, images_only, mixes, about or (factory.__doc__ or "").strip())
        return factory

    return deco


def _seed_from(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


@register_augment("crop", images_only=True)
def random_crop(padding: int | None = None) -> BatchTransform:
    """Pad every side by ``padding`` (default: 1/8 of the height, 4 px on 32 px) with zeros, crop back at random."""

    def apply(view: View, generator: torch.Generator) -> View:
        x = view.x
        n, _, h, w = x.shape
        pad = max(1, h // 8) if padding is None else int(padding)
        if pad == 0:
            return view
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator).to(x.device)
        padded = F.pad(x, (pad, pad, pad, pad))
        rows = offsets[:, 0:1] + torch.arange(h, device=x.device)  # (N, H)
        cols = offsets[:, 1:2] + torch.arange(w, device=x.device)  # (N, W)
        batch = torch.arange(n, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
        return replace(view, x=out.permute(0, 3, 1, 2).contiguous())

    if padding is not None and padding < 0:
        raise EdgekdError(f"crop padding must be >= 0, got {padding}", "e.g. padding: 4")
    return apply


@register_augment("flip", images_only=True)
def horizontal_flip(p: float = 0.5) -> BatchTransform:
    """Mirror each image left-right with probability ``p`` (valid for photos; not for text or digits)."""
    _check_probability(p, "flip")

    def apply(view: View, generator: torch.Generator) -> View:
        flip = (torch.rand(len(view.x), generator=generator) < p).to(view.x.device)
        return replace(view, x=torch.where(flip[:, None, None, None], view.x.flip(-1), view.x))

    return apply


def _mixed(view: View, partner: torch.Tensor, lam: float, x: torch.Tensor, num_classes: int) -> View:
    one_hot = view.soft_labels if view.soft_labels is not None else F.one_hot(view.labels, num_classes).float()
    soft = lam * one_hot + (1 - lam) * one_hot[partner]
    hard = view.labels if lam >= 0.5 else view.labels[partner]
    return View(x, hard, soft, (partner, lam))


@register_augment("mixup", images_only=False, mixes=True)
def mixup(alpha: float = 0.2, num_classes: int = 0) -> BatchTransform:
    """x = lam x_i + (1 - lam) x_j, lam ~ Beta(alpha, alpha) per batch (Zhang et al., 2018)."""
    _check_alpha(alpha, "mixup")

    def apply(view: View, generator: torch.Generator) -> View:
        lam = float(np.random.default_rng(_seed_from(generator)).beta(alpha, alpha))
        partner = torch.randperm(len(view.x), generator=generator).to(view.x.device)
        return _mixed(view, partner, lam, lam * view.x + (1 - lam) * view.x[partner], num_classes)

    return apply


@register_augment("cutmix", images_only=True, mixes=True)
def cutmix(alpha: float = 1.0, num_classes: int = 0) -> BatchTransform:
    """Paste a random box of a partner image; lam = the kept area (Yun et al., 2019)."""
    _check_alpha(alpha, "cutmix")

    def apply(view: View, generator: torch.Generator) -> View:
        rng = np.random.default_rng(_seed_from(generator))
        _, _, h, w = view.x.shape
        cut = np.sqrt(1.0 - rng.beta(alpha, alpha))
        ch, cw = int(round(h * cut)), int(round(w * cut))
        cy, cx = int(rng.integers(h)), int(rng.integers(w))
        y0, y1 = max(cy - ch // 2, 0), min(cy + ch - ch // 2, h)
        x0, x1 = max(cx - cw // 2, 0), min(cx + cw - cw // 2, w)
        partner = torch.randperm(len(view.x), generator=generator).to(view.x.device)
        x = view.x.clone()
        x[:, :, y0:y1, x0:x1] = view.x[partner][:, :, y0:y1, x0:x1]
        lam = 1.0 - (y1 - y0) * (x1 - x0) / (h * w)
        return _mixed(view, partner, lam, x, num_classes)

    return apply


def _check_probability(p: float, name: str) -> None:
    if not 0.0 <= p <= 1.0:
        raise EdgekdError(f"{name}: probability must be in [0, 1], got {p}", "e.g. p: 0.5")


def _check_alpha(alpha: float, name: str) -> None:
    if not alpha > 0:
        raise EdgekdError(f"{name}: alpha must be > 0, got {alpha}", "e.g. alpha: 0.2 (mixup) or 1.0 (cutmix)")


class Augment:
    """The configured transforms in order (geometric first, then at most one mixing transform)."""

    def __init__(self, names: Sequence[str], transforms: Sequence[BatchTransform]) -> None:
        self.names, self.transforms = list(names), list(transforms)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> View:
        view = View(x, labels)
        for transform in self.transforms:
            view = transform(view, generator)
        return view


def check_augment(names: Sequence[str], options: dict | None, teaching: str) -> None:
    """Names, options and teaching mode, checked before any costly work (no data needed)."""
    if teaching not in TEACHING_MODES:
        raise EdgekdError(f"unknown teaching mode {teaching!r}", f"use one of {', '.join(TEACHING_MODES)}")
    if isinstance(names, str):
        raise EdgekdError(f"augment must be a list of names, got the string {names!r}", "e.g. augment: [crop, flip]")
    unknown = [n for n in names if n not in AUGMENTS]
    if unknown:
        raise EdgekdError(f"unknown augmentation {', '.join(map(repr, unknown))}",
                          f"registered: {', '.join(AUGMENTS)}")
    if len(set(names)) != len(names):
        raise EdgekdError(f"augmentation listed twice in {list(names)}", "name each transform once")
    mixing = [n for n in names if AUGMENTS[n].mixes]
    if len(mixing) > 1:
        raise EdgekdError(f"more than one mixing augmentation {mixing}", "choose one of them")
    stray = [n for n in (options or {}) if n not in names]
    if stray:
        raise EdgekdError(f"augment_options for {stray}, which is not in augment {list(names)}",
                          "add it to augment or drop its options")
    for name in names:
        opts = dict((options or {}).get(name) or {})
        accepted = [k for k in inspect.signature(AUGMENTS[name].factory).parameters if k != "num_classes"]
        bad = [k for k in opts if k not in accepted]
        if bad:
            raise EdgekdError(f"augmentation '{name}' has no option {', '.join(map(repr, bad))}",
                              f"its options: {', '.join(accepted) or '(none)'}")


def build_augment(names: Sequence[str], options: dict | None, teaching: str, *, is_image: bool,
                  num_classes: int) -> Augment | None:
    """The batch augmentation for a run, or None (no augmentation: the trainer's path is unchanged)."""
    check_augment(names, options, teaching)
    if not names:
        return None
    refused = [n for n in names if AUGMENTS[n].images_only and not is_image]
    if refused:
        raise EdgekdError(f"augmentation {', '.join(map(repr, refused))} is defined only for images, and this data "
                          "is a feature table", "drop it (mixup works on feature vectors)")
    order = sorted(names, key=lambda n: AUGMENTS[n].mixes)  # geometric transforms before mixing
    transforms = []
    for name in order:
        opts = dict((options or {}).get(name) or {})
        if AUGMENTS[name].mixes:
            opts["num_classes"] = num_classes
        try:
            transforms.append(AUGMENTS[name].factory(**opts))
        except (TypeError, ValueError) as exc:
            raise EdgekdError(f"bad options for augmentation {name!r}: {exc}", "see distill/augment.py") from None
    return Augment(order, transforms)


def teacher_cached(names: Sequence[str], teaching: str) -> bool:
    """Whether the teacher's outputs may be computed once: no augmentation, or cached teaching asked for."""
    return not names or teaching == "cached"
