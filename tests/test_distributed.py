"""One build on several processes (edgekd/distributed.py): the helpers in one process and in a group of one, the
CLI's messages and exit codes per rank, two-process training, and ``torchrun ... -m edgekd build`` end to end,
killed and resumed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from edgekd import distributed
from edgekd.cli import Terminated, main
from edgekd.distributed import MainFailed, World
from edgekd.errors import EdgekdError

REPO = Path(__file__).resolve().parents[1]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
# digits, the cheapest build that ships int8 on x86-cpu: the student choice by MACs (no accuracy search), few timings
CHEAP = ["--target", "x86-cpu", "--teacher-epochs", "2", "--runs", "10", "--warmup", "2", "--selection", "mac",
         "--no-progress"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}


def test_helpers_in_one_process_are_the_identity():
    assert distributed.world() == World() and distributed.is_main() and not distributed.under_torchrun({})
    assert distributed.from_main(lambda: 7) == 7 and distributed.main_first(lambda: "x") == "x"
    assert distributed.shard(10) == (0, 10, 10)
    t = torch.arange(4.0)
    assert distributed.all_gather(t)[0] is t and distributed.all_reduce_sum(t) is t
    distributed.barrier()
    with distributed.session() as w:  # no torchrun variables: no group
        assert w == World() and not torch.distributed.is_initialized()


def test_helpers_in_a_group_of_one(monkeypatch):
    """A real gloo group of one: joined and torn down by session(), solo() hides it, the timeout knob is checked."""
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "soon")
    for name, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
                        "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(EdgekdError, match="EDGEKD_DIST_TIMEOUT_S='soon' is not a positive number"):
        distributed.init()
    assert not torch.distributed.is_initialized()
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "60")
    with distributed.session() as w:
        assert torch.distributed.is_initialized() and w == World(0, 1, 0, "gloo")
        with distributed.solo():
            assert distributed.world() == World() and distributed.job_world().backend == "gloo"
        assert distributed.from_main(lambda: [1, 2]) == [1, 2]
        assert [p.tolist() for p in distributed.all_gather(torch.ones(2))] == [[1.0, 1.0]]
    assert not torch.distributed.is_initialized() and distributed.world() == World()


@pytest.fixture
def rank_one(monkeypatch):
    """This process as rank 1 of 2 to the CLI (the group itself is not joined)."""
    for name, value in {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr("edgekd.cli.session", contextlib.nullcontext)  # where the CLI looks it up


@pytest.mark.parametrize(("raised", "code", "said"), [
    (MainFailed(2), 2, ""),  # rank 0 failed and said why: silent, its code
    (Terminated(), 143, ""),  # torchrun stopped this rank with the others: rank 0 speaks for all
    (EdgekdError("no such data", "give a path"), 2, "edgekd: error (rank 1 of 2): no such data\n  fix: give a path\n"),
    (RuntimeError("[gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:53931. GLHF"), 3,
     "edgekd: stopped (rank 1 of 2): another rank of this torchrun job failed or went away (its own message says "
     "why): [gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:53931. GLHF\n"),
])
def test_a_rank_but_0_speaks_only_for_its_own_failure(rank_one, monkeypatch, capsys, raised, code, said):
    def fail(args):
        raise raised

    monkeypatch.setattr("edgekd.cli.build.cmd_build", fail)
    assert main(["build", "--target", "x86-cpu"]) == code
    assert capsys.readouterr().err == said


TRAIN_SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    import numpy as np, torch
    from edgekd import distributed
    from edgekd.distill.teachers import TeacherCache, TeacherRunner
    from edgekd.distill.trainer import TrainConfig, train
    from edgekd.models.students import build_model
    from tests.conftest import make_dataset

    def digest(model):
        return hashlib.sha256(b"".join(t.contiguous().numpy().tobytes()
                                       for t in model.state_dict().values())).hexdigest()

    out = sys.argv[1]
    with distributed.session() as world:
        data = make_dataset(n_train=101, shape=(1, 8, 8))
        torch.manual_seed(0)
        teacher = build_model("teacher_cnn", data.input_shape, data.num_classes, widths=(8, 16))
        student = build_model("mobilenetv2", data.input_shape, data.num_classes, width=0.25)
        runner = TeacherRunner([teacher], ["features"])
        sharded = TeacherCache.build(runner, data.x_train, torch.device("cpu"), 1e9, batch_size=16)
        with distributed.solo():
            whole = TeacherCache.build(runner, data.x_train, torch.device("cpu"), 1e9, batch_size=16)
        same = all(np.allclose(a, b, atol=1e-5) for a, b in zip(sharded.logits + list(sharded.features.values()),
                                                                 whole.logits + list(whole.features.values())))
        config = TrainConfig(epochs=3, batch_size=16, loss_weights={"kd": 0.5, "hint": 0.3, "ce": 0.2},
                             loss_options={"hint": {"student": "features", "teacher": "features"}}, label="ddp")
        result = train(student, data, config, teacher=teacher, progress=False, checkpoint_dir=out + "/ckpt")
        mine = {"rank": world.rank, "hash": digest(result.model), "cache_same": same, "history":
                [{k: v for k, v in row.items() if k != "epoch_time_s"} for row in result.history],
                "world_size": result.summary()["world_size"], "resumed": result.details["resumed_from_epoch"]}
        json.dump(mine, open(f"{out}/rank{world.rank}.json", "w"))
""")


@pytest.mark.slow  # ~30 s: two processes each importing torch, twice
def test_two_processes_train_alike_and_resume(tmp_path):
    """Both ranks end with the same weights and history; the sharded teacher cache equals the whole one; a second
    run finds rank 0's checkpoint on both ranks (resumed from the last epoch)."""
    script = tmp_path / "train_ddp.py"
    script.write_text(TRAIN_SCRIPT)
    for attempt in (1, 2):
        proc = subprocess.run([*TORCHRUN, str(script), str(tmp_path)], cwd=REPO, env=_env(), capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
        assert ranks[0]["hash"] == ranks[1]["hash"] and ranks[0]["history"] == ranks[1]["history"]
        assert all(r["cache_same"] and r["world_size"] == 2 for r in ranks)
        assert [r["resumed"] for r in ranks] == ([None, None] if attempt == 1 else [3, 3])
    assert len(list((tmp_path / "ckpt").glob("train-*/checkpoint.pt"))) == 1
    # the same run in ONE process finds the 2-process checkpoint: the world size is not part of its key
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], cwd=REPO, env=_env(), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    alone = json.loads((tmp_path / "rank0.json").read_text())
    assert alone["world_size"] == 1 and alone["resumed"] == 3


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "linear"])
def test_a_schedule_placed_at_a_step_gives_the_lr_of_one_stepped_there(schedule):
    """Resuming on another world size re-places the LR schedule at the epoch reached (distill/loop.place_schedule)."""
    from edgekd.distill.loop import place_schedule
    from edgekd.distill.schedules import make_lr_scheduler

    def fresh():
        optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=0.01)
        return optimizer, make_lr_scheduler(schedule, optimizer, 0.01, 40)

    stepped_opt, stepped = fresh()
    for _ in range(17):
        stepped_opt.step()
        stepped.step()
    placed_opt, placed = fresh()
    place_schedule(placed, 17)
    assert placed.last_epoch == stepped.last_epoch == 17
    assert placed_opt.param_groups[0]["lr"] == pytest.approx(stepped_opt.param_groups[0]["lr"], rel=1e-9)
    assert placed_opt.param_groups[0]["lr"] != pytest.approx(fresh()[0].param_groups[0]["lr"])


def _build(out: Path, cache: Path, *extra: str) -> list[str]:
    return [*TORCHRUN, "-m", "edgekd", "build", *CHEAP, "--out", str(out), "--cache-dir", str(cache), *extra]


@pytest.mark.slow  # ~2-4 min on 2 busy cores: a teacher, a student and the x86-cpu exports
def test_torchrun_build_writes_one_complete_run(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(_build(out, tmp_path / "cache", "--epochs", "4"),
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # 1: built, but a latency budget missed on a busy host
    assert proc.stdout.count("# edgekd report: x86-cpu") == 1  # rank 0 alone prints the report
    assert proc.stderr.count("training the default 'teacher_resnet'") == 1  # and logs
    report = json.loads((out / "report.json").read_text())
    assert report["training"] == {"world_size": 2, "backend": "gloo", "device": "cpu", "precision": "fp32"}
    assert report["teacher"]["training"]["world_size"] == 2 and report["student"]["distillation"]["world_size"] == 2
    assert {"teacher", "distill", "export", "benchmark"} <= set(report["stage_times_s"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["artifacts"] and (out / "report.html").is_file()
    assert not (tmp_path / ".run.edgekd").exists()  # nothing left to resume, no staging


def _checkpoint(home: Path) -> bool:
    return any(home.glob("checkpoints/train-*/checkpoint.pt"))


def _kill_job(pid: int) -> None:
    """SIGKILL the ranks (torchrun starts each in a session of its own), then torchrun: a hard kill of the job."""
    children = [int(c) for f in Path(f"/proc/{pid}/task").glob("*/children") for c in f.read_text().split()]
    for victim in (*children, pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


@pytest.mark.slow  # ~3-5 min: a build killed mid-distillation, then the same command again
def test_a_killed_torchrun_build_resumes(tmp_path):
    out, home = tmp_path / "run", tmp_path / ".run.edgekd"
    cmd = _build(out, tmp_path / "cache", "--epochs", "12")  # the teacher trained and cached by the killed run
    log = tmp_path / "killed.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + 600
        while not _checkpoint(home) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        _kill_job(proc.pid)  # mid-distillation: the first epoch's checkpoint is written
        proc.wait()
    assert _checkpoint(home), log.read_text()[-3000:]
    assert not out.exists()
    again = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode in (0, 1), again.stderr[-3000:]  # 1: the gate failed (still a complete run)
    distillation = json.loads((out / "report.json").read_text())["student"]["distillation"]
    assert 1 <= distillation["resumed_from_epoch"] < 12 and distillation["epochs_run"] == 12
    assert distillation["world_size"] == 2
