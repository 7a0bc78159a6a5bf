from pathlib import Path

import pytest
import torch

from edgekd.errors import EdgekdError
from edgekd.models.budget import count_macs, count_params, fit_student_to_budget
from edgekd.models.mobilenetv2 import MobileNetV2Student
from edgekd.models.students import ARCHITECTURES, build_model
from edgekd.models.teachers import load_teacher
from edgekd.targets import StudentBudget


def test_macs_counts_conv_and_linear_exactly():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 8 * 8, 10, bias=False))
    assert count_macs(model, (1, 8, 8)) == 4 * 9 * 64 + 256 * 10
    assert count_params(model) == 36 + 2560


def test_student_fits_budget_and_is_largest():
    budget = StudentBudget(max_params=60_000, max_macs=800_000, channel_multiple=8, max_teacher_macs_ratio=1.0)
    choice = fit_student_to_budget((1, 8, 8), 10, budget)
    model = choice.build((1, 8, 8), 10)
    assert count_macs(model, (1, 8, 8)) == choice.macs <= 800_000
    assert count_params(model) == choice.params <= 60_000
    assert choice.candidates_fitting > 1 and choice.rule
    # a tighter budget gets a smaller student
    smaller = fit_student_to_budget((1, 8, 8), 10, budget.model_copy(update={"max_macs": 200_000}))
    assert smaller.macs < choice.macs


def test_teacher_ratio_caps_the_student():
    budget = StudentBudget(max_params=10**7, max_macs=10**9, max_teacher_macs_ratio=0.1)
    choice = fit_student_to_budget((1, 8, 8), 10, budget, teacher_macs=5_000_000)
    assert choice.macs <= 500_000 and choice.max_macs == 500_000


def test_channels_are_multiples():
    model = MobileNetV2Student((1, 8, 8), 10, width=0.75, channel_multiple=16)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(c.out_channels % 16 == 0 for c in convs)


def test_mlp_family_for_flat_inputs():
    choice = fit_student_to_budget((20,), 3, StudentBudget(max_params=20_000, max_macs=20_000))
    assert choice.family == "mlp" and choice.macs <= 20_000


def test_budget_too_small():
    with pytest.raises(EdgekdError, match="no 'mobilenetv2' student fits"):
        fit_student_to_budget((1, 8, 8), 10, StudentBudget(max_params=10, max_macs=10))


def test_registry_builds_every_architecture():
    for name in ARCHITECTURES:
        shape = (1, 8, 8) if name in ("mobilenetv2", "resnet", "teacher_cnn", "teacher_resnet") else (64,)
        out = build_model(name, shape, 5)(torch.zeros(2, *shape))
        assert out.shape == (2, 5)


@pytest.fixture
def teacher():
    torch.manual_seed(0)
    return build_model("teacher_cnn", (1, 8, 8), 4, widths=(8, 8, 8)).eval()


def test_load_teacher_formats(tmp_path, teacher):
    x = torch.randn(3, 1, 8, 8)
    expected = teacher(x)
    torch.jit.save(torch.jit.trace(teacher, x), tmp_path / "ts.pt")
    torch.export.save(torch.export.export(teacher, (x,)), tmp_path / "t.pt2")
    torch.save(teacher.state_dict(), tmp_path / "sd.pt")
    for path, kwargs in (("ts.pt", {"trust_pickle": True}), ("t.pt2", {}),
                         ("sd.pt", {"arch": "teacher_cnn", "arch_config": {"widths": [8, 8, 8]}})):
        loaded = load_teacher(tmp_path / path, (1, 8, 8), 4, **kwargs)
        assert torch.allclose(loaded.model(x), expected, atol=1e-5), path


def test_load_teacher_bad_input(tmp_path, teacher):
    torch.save(teacher.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(EdgekdError, match="needs its architecture"):
        load_teacher(tmp_path / "sd.pt", (1, 8, 8), 4)
    with pytest.raises(EdgekdError, match="does not match architecture"):
        load_teacher(tmp_path / "sd.pt", (1, 8, 8), 4, arch="teacher_cnn")
    torch.jit.save(torch.jit.trace(teacher, torch.randn(1, 1, 8, 8)), tmp_path / "ts.pt")
    with pytest.raises(EdgekdError, match="outputs .* but the data has 7 classes"):
        load_teacher(tmp_path / "ts.pt", (1, 8, 8), 7, trust_pickle=True)
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    with pytest.raises(EdgekdError, match="cannot load teacher"):
        load_teacher(tmp_path / "corrupt.pt", (1, 8, 8), 4, arch="teacher_cnn")
    with pytest.raises(EdgekdError, match="not found"):
        load_teacher(tmp_path / "missing.pt", (1, 8, 8), 4)


def test_pickled_module_refused_by_default(tmp_path, teacher):
    torch.save(teacher, tmp_path / "pickled.pt")
    with pytest.raises(EdgekdError, match="cannot load teacher"):
        load_teacher(tmp_path / "pickled.pt", (1, 8, 8), 4)
    assert load_teacher(tmp_path / "pickled.pt", (1, 8, 8), 4, trust_pickle=True).source == "pickled-module"


def test_torchscript_needs_opt_in(tmp_path, teacher):
    torch.jit.save(torch.jit.trace(teacher, torch.randn(1, 1, 8, 8)), tmp_path / "ts.pt")
    with pytest.raises(EdgekdError, match="TorchScript.*security policy") as info:
        load_teacher(tmp_path / "ts.pt", (1, 8, 8), 4)
    assert "--trust-pickle" in info.value.fix


class _RunsCode:
    """A pickle payload that writes a marker file when unpickled: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def _poison_member(archive: Path, member_suffix: str, payload: bytes, out: Path) -> str:
    """Copy a .pt2 with one member replaced by ``payload``; returns the replaced member's name."""
    import zipfile

    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(out, "w") as dst:
        names = [i.filename for i in src.infolist()]
        target = next(n for n in names if n.endswith(member_suffix))
        for name in names:
            dst.writestr(name, payload if name == target else src.read(name))
    return target


@pytest.mark.parametrize("member", ["data/sample_inputs/model.pt"])
def test_pt2_with_code_running_pickle_is_refused(tmp_path, teacher, member):
    import pickle

    torch.export.save(torch.export.export(teacher, (torch.randn(2, 1, 8, 8),)), tmp_path / "good.pt2")
    marker = tmp_path / "marker.txt"
    name = _poison_member(tmp_path / "good.pt2", member, pickle.dumps(_RunsCode(marker)), tmp_path / "evil.pt2")
    with pytest.raises(EdgekdError, match="does not load with weights_only=True") as info:
        load_teacher(tmp_path / "evil.pt2", (1, 8, 8), 4)
    assert name.split("/", 1)[1] in info.value.problem
    assert "--trust-pickle" in info.value.fix
    assert not marker.exists(), "the payload ran while the archive was checked"
    # torch.export.load itself would run it: this is the attack the check stops.
    with pytest.raises(Exception):  # noqa: B017 - torch raises after the payload returns
        torch.export.load(str(tmp_path / "evil.pt2"))
    assert marker.exists()


def test_pt2_with_pickled_weight_is_checked(tmp_path, teacher):
    """A weight flagged ``use_pickle`` in the config is loaded by torch with weights_only=False: checked first."""
    import json
    import pickle
    import zipfile

    torch.export.save(torch.export.export(teacher, (torch.randn(2, 1, 8, 8),)), tmp_path / "good.pt2")
    marker = tmp_path / "marker.txt"
    with zipfile.ZipFile(tmp_path / "good.pt2") as src, zipfile.ZipFile(tmp_path / "evil.pt2", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"].values()))
                first["use_pickle"] = True
                poisoned = f"data/weights/{first['path_name']}"
                data = json.dumps(config).encode()
            dst.writestr(info, data)
    blob = pickle.dumps(_RunsCode(marker))
    with zipfile.ZipFile(tmp_path / "evil.pt2") as src, zipfile.ZipFile(tmp_path / "evil2.pt2", "w") as dst:
        for info in src.infolist():
            dst.writestr(info, blob if info.filename.endswith(poisoned) else src.read(info))
    with pytest.raises(EdgekdError, match=poisoned):
        load_teacher(tmp_path / "evil2.pt2", (1, 8, 8), 4)
    assert not marker.exists()


def test_student_families_carry_their_search_space():
    from edgekd.models.students import STUDENT_FAMILIES, student_family

    assert student_family("auto", (1, 8, 8)).name == "mobilenetv2"  # made for images beats "any"
    assert student_family("auto", (16,)).name == "mlp"
    for family in STUDENT_FAMILIES.values():
        assert family.search_space(8), family.name
    with pytest.raises(EdgekdError, match="takes image inputs"):
        student_family("mobilenetv2", (16,))
    with pytest.raises(EdgekdError, match="unknown student family 'resnet9000'"):
        student_family("resnet9000", (1, 8, 8))


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_resnet_students_are_dense_and_sized_by_their_configuration(shape):
    """The dense family: no depthwise convolutions, MACs and params growing with width and depth, every
    configuration of its search space a working network whose counted size is what the budget fit uses."""
    from edgekd.models.budget import count_macs, count_params, size_of
    from edgekd.models.students import STUDENT_FAMILIES, build_model

    sizes = {}
    for config in STUDENT_FAMILIES["resnet"].search_space(8):
        model = build_model("resnet", shape, 10, **config)
        assert all(m.groups == 1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        assert model.eval()(torch.zeros(2, *shape)).shape == (2, 10)
        sizes[(config["width"], config["depth"])] = size_of("resnet", shape, 10, config)
        assert sizes[(config["width"], config["depth"])] == (count_params(model), count_macs(model, shape))
    assert sizes[(1.0, 1)][1] < sizes[(2.0, 1)][1] and sizes[(1.0, 1)][1] < sizes[(1.0, 2)][1]
