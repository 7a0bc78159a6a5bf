"""Teachers from where users have them: library architectures (torchvision/timm) + a state dict, ONNX graphs run by
onnxruntime, and scikit-learn ensembles (skl2onnx ONNX or a type-checked .skops file) distilled on tables."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.data import Normalization
from edgekd.errors import EdgekdError
from edgekd.models.teachers import load_teacher, predict_logits
from tests.conftest import make_dataset
from tests.data_makers import fraud_table, write_csv

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:You are using the legacy TorchScript:DeprecationWarning")
needs_torchvision = pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="[teachers] extra")
needs_timm = pytest.mark.skipif(importlib.util.find_spec("timm") is None, reason="[teachers] extra")
needs_skl2onnx = pytest.mark.skipif(importlib.util.find_spec("skl2onnx") is None, reason="[tabular] extra")
needs_skops = pytest.mark.skipif(importlib.util.find_spec("skops") is None, reason="[tabular] extra")


def _torchvision_resnet18(classes: int) -> nn.Module:
    from edgekd.models.arch_libraries import build_library_model

    torch.manual_seed(0)
    return build_library_model("torchvision:resnet18", (3, 32, 32), classes).eval()


def _tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)).eval()


def _export(model: nn.Module, path: Path, sample: torch.Tensor, dynamic: bool = True, softmax: bool = False) -> Path:
    """The legacy exporter: small, quick, and the kind of graph other frameworks' exporters write."""
    net = nn.Sequential(model, nn.Softmax(dim=1)) if softmax else model
    axes = {"x": {0: "n"}, "out": {0: "n"}} if dynamic else None
    torch.onnx.export(net, (sample,), str(path), dynamo=False, input_names=["x"], output_names=["out"],
                      dynamic_axes=axes, opset_version=17)
    return path


# --- library architectures + state dicts -------------------------------------------------------------------


@needs_torchvision
def test_torchvision_state_dict_gives_the_trained_networks_logits(tmp_path, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("a teacher architecture must never download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    trained = _torchvision_resnet18(10)
    torch.save(trained.state_dict(), tmp_path / "r18.pt")
    teacher = load_teacher(tmp_path / "r18.pt", (3, 32, 32), 10, "torchvision:resnet18")
    x = np.random.default_rng(0).normal(size=(4, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(predict_logits(teacher.model, x), predict_logits(trained, x), atol=1e-5)
    assert teacher.source == "state_dict" and teacher.arch == "torchvision:resnet18"


@needs_torchvision
def test_safetensors_and_ddp_prefixed_state_dicts_load(tmp_path):
    from safetensors.torch import save_file

    trained = _torchvision_resnet18(4)
    save_file({f"module.{k}": v.contiguous() for k, v in trained.state_dict().items()}, tmp_path / "r18.safetensors")
    teacher = load_teacher(tmp_path / "r18.safetensors", (3, 32, 32), 4, "torchvision:resnet18")
    x = np.zeros((2, 3, 32, 32), np.float32)
    np.testing.assert_allclose(predict_logits(teacher.model, x), predict_logits(trained, x), atol=1e-5)


@needs_torchvision
def test_a_head_for_other_classes_is_named(tmp_path):
    torch.save(_torchvision_resnet18(1000).state_dict(), tmp_path / "imagenet_head.pt")
    with pytest.raises(EdgekdError) as err:
        load_teacher(tmp_path / "imagenet_head.pt", (3, 32, 32), 10, "torchvision:resnet18")
    assert "classifier head" in err.value.problem and "1000 outputs" in err.value.problem
    assert "10 classes" in err.value.problem and "fc.weight" in err.value.problem


@needs_torchvision
def test_unknown_library_names_and_grayscale_data_are_refused(tmp_path):
    from edgekd.models.arch_libraries import build_library_model

    with pytest.raises(EdgekdError, match="did you mean: resnet18"):
        build_library_model("torchvision:resnet19", (3, 32, 32), 10)
    with pytest.raises(EdgekdError, match="unknown architecture library 'keras'"):
        build_library_model("keras:resnet18", (3, 32, 32), 10)
    with pytest.raises(EdgekdError, match="RGB"):
        build_library_model("torchvision:resnet18", (1, 28, 28), 10)


@needs_timm
def test_timm_network_without_pretrained_weights(tmp_path):
    from edgekd.models.arch_libraries import build_library_model

    torch.manual_seed(0)
    trained = build_library_model("timm:mobilenetv3_small_050", (1, 32, 32), 5).eval()  # in_chans from the data
    torch.save(trained.state_dict(), tmp_path / "m.pt")
    teacher = load_teacher(tmp_path / "m.pt", (1, 32, 32), 5, "timm:mobilenetv3_small_050")
    x = np.ones((2, 1, 32, 32), np.float32)
    np.testing.assert_allclose(predict_logits(teacher.model, x), predict_logits(trained, x), atol=1e-5)


@needs_timm
def test_library_teachers_default_to_the_normalisation_they_expect():
    from edgekd.api import _normalization
    from edgekd.stages.context import BuildOptions

    def norm(arch, given=None):
        return _normalization(BuildOptions(target="x86-cpu", teacher="t.pt", teacher_arch=arch, normalization=given))

    assert norm("torchvision:resnet18") == "imagenet"
    assert norm("timm:vit_tiny_patch16_224") == "inception"  # timm's own pretrained_cfg, not a blanket default
    assert norm("torchvision:resnet18", "fit") == "fit"  # the user's choice wins
    assert norm("teacher_cnn") is None  # edgekd's own architectures: train statistics as before


# --- ONNX teachers ---------------------------------------------------------------------------------------------


def test_onnx_teacher_gives_the_exported_networks_logits(tmp_path):
    model = _tiny_cnn()
    x = np.random.default_rng(0).normal(size=(5, 1, 8, 8)).astype(np.float32)
    for name, kwargs in {"dynamic": {}, "batch1": {"dynamic": False}, "softmax": {"softmax": True}}.items():
        path = _export(model, tmp_path / f"{name}.onnx", torch.from_numpy(x[:1]), **kwargs)
        teacher = load_teacher(path, (1, 8, 8), 3)
        assert teacher.source == "onnx" and getattr(teacher.model, "logits_only", False)
        got = predict_logits(teacher.model, x)
        want = predict_logits(model, x)
        if name == "softmax":  # read before the Softmax: the logits themselves
            assert teacher.config["output"].startswith("softmax input")
        np.testing.assert_allclose(got, want, atol=1e-4, err_msg=name)


def test_onnx_teacher_cost_matches_torch_count(tmp_path):
    from edgekd.models.budget import count_macs

    model = _tiny_cnn()
    teacher = load_teacher(_export(model, tmp_path / "t.onnx", torch.zeros(1, 1, 8, 8)), (1, 8, 8), 3)
    assert teacher.config["macs"] == count_macs(model, (1, 8, 8))
    assert teacher.config["params"] == sum(p.numel() for p in model.parameters())


def test_onnx_teacher_input_and_classes_checked_against_the_data(tmp_path):
    path = _export(_tiny_cnn(), tmp_path / "t.onnx", torch.zeros(1, 1, 8, 8))
    with pytest.raises(EdgekdError) as err:
        load_teacher(path, (1, 16, 16), 3)
    assert "takes input (n, 1, 8, 8)" in err.value.problem and "(N, 1, 16, 16)" in err.value.problem
    with pytest.raises(EdgekdError, match="outputs .* 5 classes|but the data has 5 classes"):
        load_teacher(path, (1, 8, 8), 5)
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(EdgekdError, match="cannot read ONNX teacher"):
        load_teacher(tmp_path / "junk.onnx", (1, 8, 8), 3)


def test_feature_losses_need_a_pytorch_teacher(tmp_path):
    from edgekd.distill.trainer import TrainConfig, train
    from edgekd.models.students import build_model

    data = make_dataset(shape=(1, 8, 8))
    teacher = load_teacher(_export(_tiny_cnn(), tmp_path / "t.onnx", torch.zeros(1, 1, 8, 8)), (1, 8, 8), 3)
    student = build_model("mobilenetv2", (1, 8, 8), 3)
    config = TrainConfig(epochs=1, loss_weights={"kd": 0.5, "hint": 0.5},
                         loss_options={"hint": {"student": "features", "teacher": "1"}})
    with pytest.raises(EdgekdError, match="need a PyTorch teacher") as err:
        train(student, data, config, teacher=teacher.model, progress=False)
    assert "kd=" in err.value.fix
    result = train(student, data, TrainConfig(epochs=1), teacher=teacher.model, progress=False)
    assert result.summary()["teachers"]["outputs"].startswith("cached once")  # logits computed once


@pytest.mark.slow  # two builds up to the point of refusal: ~50 s on a loaded 2-core machine
def test_cli_refuses_feature_losses_and_wrong_heads_with_exit_2(tmp_path, capsys):
    from edgekd.cli import main

    torch.manual_seed(0)
    digits_cnn = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 64, 3, padding=1), nn.ReLU(),
                               nn.Flatten(), nn.Linear(4096, 10)).eval()  # enough MACs for a student to fit
    path = _export(digits_cnn, tmp_path / "t.onnx", torch.zeros(1, 1, 8, 8))
    common = ["build", "--target", "x86-cpu", "--data", "digits", "--epochs", "1", "--no-progress",
              "--out", str(tmp_path / "run")]
    assert main([*common, "--teacher", str(path), "--losses", "kd=0.5,at=0.5"]) == 2
    assert "need a PyTorch teacher" in capsys.readouterr().err
    torch.save(nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 3)).state_dict(),
               tmp_path / "three.pt")
    assert main([*common, "--teacher", str(tmp_path / "three.pt"), "--teacher-arch", "torchvision:resnet18"]) == 2
    assert "RGB" in capsys.readouterr().err  # digits are grayscale: said before any weights are read
    assert not (tmp_path / "run").exists()


# --- scikit-learn teachers on tables ---------------------------------------------------------------------------


def _table(tmp_path: Path, n: int = 400, features: int = 6):
    x, y = fraud_table(n=n, features=features, minority=0.1, seed=0)
    x = (x * 5 + 20).astype(np.float32)  # raw columns far from standardised: the teacher must see them raw
    return x, y


@needs_skl2onnx
def test_sklearn_onnx_teacher_reads_raw_columns_and_checks_classes(tmp_path):
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _table(tmp_path)
    clf = GradientBoostingClassifier(n_estimators=10, random_state=0).fit(x, y)
    (tmp_path / "gb.onnx").write_bytes(to_onnx(clf, x[:1]).SerializeToString())  # with ZipMap, as by default
    mean, std = x.mean(0), x.std(0)
    norm = Normalization(1.0, mean.tolist(), std.tolist())
    teacher = load_teacher(tmp_path / "gb.onnx", (6,), 2, normalization=norm, classes=["0", "1"])
    assert teacher.config["reads"] == "raw columns" and teacher.config["ml_ops"] == ["TreeEnsembleClassifier"]
    logits = predict_logits(teacher.model, norm.apply(x[:50]))
    np.testing.assert_allclose(np.exp(logits), clf.predict_proba(x[:50]), atol=1e-4)
    with pytest.raises(EdgekdError, match="predicts classes"):
        load_teacher(tmp_path / "gb.onnx", (6,), 2, normalization=norm, classes=["fraud", "ok"])
    double = to_onnx(clf, x[:1].astype(np.float64), options={"zipmap": False})  # a double graph: cast in and out
    (tmp_path / "gb64.onnx").write_bytes(double.SerializeToString())
    teacher64 = load_teacher(tmp_path / "gb64.onnx", (6,), 2, normalization=norm, classes=["0", "1"])
    np.testing.assert_allclose(predict_logits(teacher64.model, norm.apply(x[:50])), logits, atol=1e-4)


def _double(x):
    return 2 * x


@needs_skops
@needs_skl2onnx
def test_skops_teacher_checked_against_trusted_types(tmp_path):
    import skops.io as sio
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x, y = _table(tmp_path)
    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(x, y)
    sio.dump(forest, tmp_path / "rf.skops")
    norm = Normalization(1.0, x.mean(0).tolist(), x.std(0).tolist())
    teacher = load_teacher(tmp_path / "rf.skops", (6,), 2, normalization=norm, classes=["0", "1"])
    assert teacher.source == "skops"
    np.testing.assert_allclose(np.exp(predict_logits(teacher.model, norm.apply(x[:20]))), forest.predict_proba(x[:20]),
                               atol=1e-4)
    with pytest.raises(EdgekdError, match="fitted on 6 features; the data has 7"):
        load_teacher(tmp_path / "rf.skops", (7,), 2, normalization=None, classes=["0", "1"])
    code = make_pipeline(FunctionTransformer(_double), RandomForestClassifier(n_estimators=2)).fit(x, y)
    sio.dump(code, tmp_path / "code.skops")
    with pytest.raises(EdgekdError) as err:
        load_teacher(tmp_path / "code.skops", (6,), 2, normalization=norm)
    assert "does not trust" in err.value.problem and "_double" in err.value.problem


# --- the resnet18 example: .pt and its ONNX export are the same teacher -----------------------------------------


@needs_torchvision
def test_resnet18_state_dict_and_its_onnx_export_give_the_same_logits(tmp_path):
    spec = importlib.util.spec_from_file_location("make_resnet18_teacher", REPO / "examples/make_resnet18_teacher.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8), "y_train": np.arange(40) % 4,
              "x_test": rng.integers(0, 256, (8, 3, 32, 32), dtype=np.uint8), "y_test": np.arange(8) % 4}
    np.savez(tmp_path / "photos.npz", **arrays)
    done = example.make_teacher(str(tmp_path / "photos.npz"), tmp_path / "r18.pt", tmp_path / "r18.onnx", epochs=1,
                                batch_size=16, progress=False)
    assert done["arch"] == "torchvision:resnet18" and Path(done["onnx"]).is_file()
    pt = load_teacher(tmp_path / "r18.pt", (3, 32, 32), 4, "torchvision:resnet18")
    onnx_teacher = load_teacher(tmp_path / "r18.onnx", (3, 32, 32), 4)
    x = rng.normal(size=(6, 3, 32, 32)).astype(np.float32)
    np.testing.assert_allclose(predict_logits(onnx_teacher.model, x), predict_logits(pt.model, x), atol=1e-4)
    assert onnx_teacher.config["macs"] > 0


# --- end to end: a gradient-boosted ensemble distilled into an int8 MLP -----------------------------------------


@pytest.mark.slow
@needs_skl2onnx
def test_build_distils_an_onnx_ensemble_into_an_int8_mlp(tmp_path, capsys):
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier

    from edgekd.cli import main

    x, y = fraud_table(n=1500, features=10, minority=0.1, seed=0)
    x = (x * 4 + 50).astype(np.float32)
    write_csv(tmp_path / "table.csv", [f"f{i}" for i in range(10)] + ["y"],
              [[f"{v:.6g}" for v in row] + [int(label)] for row, label in zip(x, y, strict=True)])
    forest = RandomForestClassifier(n_estimators=100, max_depth=8, random_state=0).fit(x[:900], y[:900])
    (tmp_path / "ensemble.onnx").write_bytes(to_onnx(forest, x[:1], options={"zipmap": False}).SerializeToString())
    out = tmp_path / "run"
    code = main(["build", "--target", "x86-cpu", "--data", str(tmp_path / "table.csv"), "--label-column", "y",
                 "--teacher", str(tmp_path / "ensemble.onnx"), "--epochs", "15", "--runs", "30", "--warmup", "5",
                 "--out", str(out), "--no-progress", "--baseline"])
    err = capsys.readouterr().err
    if code == 2 and ("breaks parity" in err or "accuracy contract" in err):
        # int8 agreement / accuracy contracts sit near their limits for a 1,500-row table; another CPU's int8
        # kernels can land on the other side. That is the contract doing its job, not this test's subject.
        pytest.skip("the int8 contract was not met on this CPU (exit 2, nothing shipped)")
    assert code in (0, 1)  # 1: a latency budget failed on this loaded host; the artifacts are written either way
    report = json.loads((out / "report.json").read_text())
    teacher = report["teacher"]
    assert teacher["source"] == "onnx" and teacher["arch"] == "TreeEnsembleClassifier"
    assert teacher["accuracy"] > 0.8 and teacher["latency_ms"]["p50"] > 0
    assert teacher["by_format"]["onnx"]["runtime"] == "onnxruntime"  # measured by the runner like any teacher
    shipped = [a for a in report["artifacts"] if a["shipped"]]
    assert any(a["precision"] == "int8" for a in shipped) and report["student"]["family"] == "mlp"
    assert all((out / a["path"]).is_file() for a in shipped)
    vino = next(a for a in report["artifacts"] if a["format"] == "openvino")
    assert vino["teacher_runtime"] == "onnxruntime"  # no OpenVINO form of a tree ensemble: said, not hidden
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["normalization"]["mean"]) == 10  # per-feature standardisation, applied by the runner
    md = (out / "report.md").read_text()
    assert "teacher (TreeEnsembleClassifier)" in md and "teacher_fp32.onnx" in md
