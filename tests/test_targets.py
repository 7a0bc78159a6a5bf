import pytest
import yaml

from edgekd.errors import EdgekdError
from edgekd.targets import list_targets, load_target

SHIPPED = {"rpi4", "jetson-orin-nano", "android-nnapi", "x86-cpu"}


def test_shipped_targets_load_and_name_their_sources():
    targets = {t.name: t for t in list_targets()}
    assert SHIPPED <= set(targets)
    for t in targets.values():
        assert t.sources and all(len(s) > 10 for s in t.sources)
        assert t.student_budget.max_macs > 0 and t.runtime.threads >= 1
    assert targets["jetson-orin-nano"].runtime.precisions == ("fp16",)
    assert targets["x86-cpu"].runtime.formats == ("openvino", "onnx")
    assert targets["android-nnapi"].runtime.integer_io


def test_user_file_by_path(tmp_path):
    raw = yaml.safe_load(open(load_target("x86-cpu").path))
    raw["name"] = "my-board"
    path = tmp_path / "board.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_target(str(path)).name == "my-board"


def test_unknown_target_lists_known_ones():
    with pytest.raises(EdgekdError) as err:
        load_target("raspberry-pi-9")
    assert "unknown target" in err.value.problem and "rpi4" in err.value.fix


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r["budgets"].update(latency_ms_p95=0), "budgets.latency_ms_p95"),
        (lambda r: r["student_budget"].update(max_params=-5), "student_budget.max_params"),
        (lambda r: r.pop("runtime"), "runtime"),
        (lambda r: r["runtime"].update(format="coreml"), "runtime.format"),
        (lambda r: r["budgets"].update(latency_ms=3), "budgets.latency_ms"),
    ],
)
def test_invalid_fields_are_named(tmp_path, mutate, field):
    raw = yaml.safe_load(open(load_target("rpi4").path))
    mutate(raw)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(EdgekdError) as err:
        load_target(str(path))
    assert f"'{field}'" in err.value.problem


def test_malformed_yaml(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nbudgets: [unclosed\n")
    with pytest.raises(EdgekdError, match="not valid YAML"):
        load_target(str(path))
