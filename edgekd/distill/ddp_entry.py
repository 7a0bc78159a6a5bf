"""Entry point for distributed distillation: ``torchrun --nproc_per_node N -m edgekd.distill.ddp_entry ...``.

Each process joins the group (gloo on CPU, nccl on GPU), builds the same student and teacher from the same
seed, and calls ``train``, which wraps the student in DistributedDataParallel and shards the data. Ranks then
compare a hash of their final weights (they must agree) and only rank 0 writes ``result.json``.

``--data toy`` makes a tiny synthetic set in-process (what the 2-process test uses); anything else is passed
to ``edgekd.data.load_dataset``. The teacher is a registered architecture, loaded from ``--teacher-weights``
(a state_dict) when given, else a seeded fresh one (enough to exercise the code path).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from edgekd.data import Dataset, Normalization, load_dataset
from edgekd.distill.trainer import TrainConfig, train
from edgekd.io import write_json
from edgekd.models.students import build_model


def toy_dataset(n_train: int = 256, features: int = 16, classes: int = 3, seed: int = 0) -> Dataset:
    """Separable Gaussian blobs: a few KB, identical on every rank because the seed is shared."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (classes, features)).astype(np.float32)

    def split(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, classes, n)
        return (centers[y] + 0.5 * rng.normal(0, 1, (n, features))).astype(np.float32), y.astype(np.int64)

    (xt, yt), (xv, yv), (xs, ys) = split(n_train), split(n_train // 4), split(n_train // 4)
    return Dataset("toy", "toy", [str(i) for i in range(classes)], xt, yt, xv, yv, xs, ys,
                   Normalization(1.0, [0.0], [1.0]))


def state_hash(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _losses(text: str) -> dict[str, float]:
    return {k.strip(): float(v) for k, v in (p.split("=", 1) for p in text.split(",") if p)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="directory for result.json (rank 0 only)")
    p.add_argument("--data", default="toy")
    p.add_argument("--max-train", type=int)
    p.add_argument("--student", default="mlp")
    p.add_argument("--student-config", type=json.loads, default={"hidden": [32, 16]})
    p.add_argument("--teacher", default="teacher_mlp")
    p.add_argument("--teacher-config", type=json.loads, default={})
    p.add_argument("--teacher-weights", help="state_dict for --teacher")
    p.add_argument("--losses", type=_losses, default={"kd": 0.5, "hint": 0.3, "ce": 0.2})
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-dir")
    args = p.parse_args(argv)

    torch.set_num_threads(int(os.environ.get("EDGEKD_THREADS", "1")))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", dist.get_rank())) % torch.cuda.device_count())
    try:
        data = toy_dataset(seed=args.seed) if args.data == "toy" else load_dataset(args.data, seed=args.seed,
                                                                                     max_train=args.max_train)
        torch.manual_seed(args.seed)
        teacher = build_model(args.teacher, data.input_shape, data.num_classes, **args.teacher_config)
        if args.teacher_weights:
            teacher.load_state_dict(torch.load(args.teacher_weights, map_location="cpu", weights_only=True))
        student = build_model(args.student, data.input_shape, data.num_classes, **args.student_config)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                             loss_weights=args.losses, label="student (DDP)")
        result = train(student, data, config, teacher=teacher, progress=False, checkpoint_dir=args.checkpoint_dir)
        mine = {"rank": dist.get_rank(), "state_hash": state_hash(result.model),
                "best_val_accuracy": result.best_val_accuracy, "history": result.history}
        everyone: list[dict] = [{} for _ in range(dist.get_world_size())]
        dist.all_gather_object(everyone, mine)
        if dist.get_rank() == 0:
            out = Path(args.out)
            write_json(out / "result.json", {"world_size": dist.get_world_size(), "backend": backend,
                                             "summary": result.summary(), "ranks": everyone,
                                             "ranks_agree": len({r["state_hash"] for r in everyone}) == 1})
            torch.save(result.model.state_dict(), out / "student.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
