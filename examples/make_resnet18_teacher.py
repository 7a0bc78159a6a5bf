"""Train a torchvision ResNet-18 teacher on CIFAR-10 (or any ImageFolder) and save it as a state dict and as ONNX.

What a user who fine-tuned a network elsewhere arrives with, made here so that both of edgekd's paths can be
compared on the same weights:

    python examples/make_resnet18_teacher.py --data ../shared/datasets/cifar10/cifar10-jpg.tar.gz --epochs 15
    edgekd build --target rpi4 --data ../shared/datasets/cifar10/cifar10-jpg.tar.gz \
        --teacher resnet18.pt --teacher-arch torchvision:resnet18 --losses kd=0.7,ce=0.3
    edgekd build --target rpi4 --data ../shared/datasets/cifar10/cifar10-jpg.tar.gz --teacher resnet18.onnx \
        --normalization imagenet --losses kd=0.7,ce=0.3

The network is torchvision's own ``resnet18`` (``weights=None``: nothing is downloaded), trained on edgekd's
training split of the data with its ImageNet normalisation (what the build uses for a ``torchvision:`` teacher),
with random crop + flip augmentation, keeping the best epoch on edgekd's validation split (same seed: the teacher
never sees the validation or test samples). The test split is not touched here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from edgekd.backends.onnx import export_onnx_fp32  # noqa: E402
from edgekd.data import load_dataset  # noqa: E402
from edgekd.distill.trainer import TrainConfig, train  # noqa: E402
from edgekd.models.arch_libraries import build_library_model  # noqa: E402

ARCH = "torchvision:resnet18"


def crop_flip(pad: int = 4):
    """Random crop (zero-padded by ``pad``) and horizontal flip of a normalised NCHW batch."""

    def transform(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        flip = torch.rand(n, generator=generator) < 0.5
        out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
        out[flip] = out[flip].flip(-1)
        return out

    return transform


def make_teacher(data_spec: str, out: Path, onnx_path: Path | None, epochs: int, max_train: int | None = None,
                 image_size: int | None = None, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                 progress: bool = True) -> dict:
    """Train, save the state dict (and the ONNX export); return what was done, validation accuracy included."""
    data = load_dataset(data_spec, seed=seed, max_train=max_train, image_size=image_size, normalization="imagenet")
    torch.manual_seed(seed)
    model = build_library_model(ARCH, data.input_shape, data.num_classes)
    t0 = time.perf_counter()
    result = train(model, data, TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                                            label="resnet18 teacher", lr_schedule="onecycle"),
                   progress=progress, transform=crop_flip())
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result.model.state_dict(), out)
    if onnx_path is not None:
        export_onnx_fp32(result.model, np.ascontiguousarray(data.x_val[:1]), onnx_path)
    return {"arch": ARCH, "state_dict": str(out), "onnx": str(onnx_path) if onnx_path else None,
            "classes": data.classes, "input_shape": list(data.input_shape), "train_samples": len(data.y_train),
            "epochs": epochs, "best_epoch": result.best_epoch, "val_accuracy": result.best_val_accuracy,
            "train_time_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "datasets" / "cifar10" / "cifar10-jpg.tar.gz"))
    p.add_argument("--out", default="resnet18.pt", help="the state dict (torch.save)")
    p.add_argument("--onnx", default="resnet18.onnx", help="the ONNX export ('' to skip)")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--max-train", type=int, help="use only this many training images (a quick check)")
    p.add_argument("--image-size", type=int, help="resize/centre-crop photos to this size (CIFAR-10: keep 32)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0, help="the build's --seed: the same train/validation split")
    args = p.parse_args(argv)
    done = make_teacher(args.data, Path(args.out), Path(args.onnx) if args.onnx else None, args.epochs,
                        args.max_train, args.image_size, args.batch_size, args.lr, args.seed)
    print(f"{done['arch']}: best validation accuracy {done['val_accuracy']:.4f} (epoch {done['best_epoch']}/"
          f"{done['epochs']}, {done['train_samples']} training images, {done['train_time_s']:.0f}s)")
    print(f"state dict: {done['state_dict']}" + (f"; ONNX: {done['onnx']}" if done["onnx"] else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
