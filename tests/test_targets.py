import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from edgekd.cli import main
from edgekd.errors import EdgekdError
from edgekd.formats import EXTRA_INCLUDES, EXTRA_MODULES
from edgekd.targets import (
    SHIPPED,
    TARGETS_PATH_ENV,
    available_targets,
    describe_target,
    list_targets,
    load_target,
    missing_extras,
    require_extras,
    required_extras,
)

SHIPPED_NAMES = {"rpi4", "jetson-orin-nano", "android-nnapi", "x86-cpu"}
REPO = Path(__file__).resolve().parents[1]


def test_shipped_targets_load_and_name_their_sources():
    targets = {t.name: t for t in list_targets()}
    assert SHIPPED_NAMES <= set(targets)
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


# ------------------------------------------------------------------------------ shipped files and the search path
def _write_profile(directory, name: str, description: str = "a team board") -> None:
    raw = yaml.safe_load(open(load_target("x86-cpu").path))
    raw.update(name=name, description=description)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(raw))


def test_shipped_profiles_are_package_data():
    """Read through importlib.resources from inside the package, so a wheel install finds them too."""
    import edgekd

    shipped = {name: s for name, s in available_targets().items() if s.origin == SHIPPED}
    assert set(shipped) == SHIPPED_NAMES
    package_dir = Path(edgekd.__file__).parent.resolve()
    for source in shipped.values():
        assert package_dir in Path(str(source.file)).resolve().parents


def test_search_path_adds_and_overrides_by_name(tmp_path, monkeypatch):
    first, second = tmp_path / "team", tmp_path / "lab"
    _write_profile(first, "my-board")
    _write_profile(first, "rpi4", "our own rpi4 budgets")
    _write_profile(second, "my-board", "shadowed by the earlier directory")
    _write_profile(second, "lab-board")
    monkeypatch.setenv(TARGETS_PATH_ENV, os.pathsep.join([str(first), "", str(second)]))
    sources = available_targets()
    assert SHIPPED_NAMES | {"my-board", "lab-board"} == set(sources)
    assert sources["my-board"].origin == str(first) and sources["lab-board"].origin == str(second)
    assert sources["rpi4"].overrides_shipped and load_target("rpi4").description == "our own rpi4 budgets"
    assert load_target("my-board").description == "a team board"
    assert sources["x86-cpu"].origin == SHIPPED


def test_search_path_entry_must_be_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv(TARGETS_PATH_ENV, str(tmp_path / "missing"))
    with pytest.raises(EdgekdError, match="not a directory") as err:
        load_target("rpi4")
    assert TARGETS_PATH_ENV in err.value.fix


def test_targets_list_says_where_each_comes_from(tmp_path, monkeypatch, capsys):
    _write_profile(tmp_path / "team", "my-board")
    monkeypatch.setenv(TARGETS_PATH_ENV, str(tmp_path / "team"))
    assert main(["targets", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == SHIPPED_NAMES | {"my-board"}
    assert lines["my-board"].endswith(f"[{tmp_path / 'team'}]") and lines["rpi4"].endswith("[shipped]")
    (tmp_path / "team" / "broken.yaml").write_text("name: broken\n")
    assert main(["targets", "list"]) == 2
    assert "broken             INVALID" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------- name vs path
def test_a_directory_named_like_the_target_never_shadows_it(tmp_path, monkeypatch):
    (tmp_path / "x86-cpu").mkdir()
    monkeypatch.chdir(tmp_path)
    assert load_target("x86-cpu").name == "x86-cpu"
    with pytest.raises(EdgekdError, match="is a directory"):
        load_target("x86-cpu/")
    with pytest.raises(EdgekdError, match="not found"):
        load_target("x86-cpu.yaml")  # a YAML suffix means a path, even when a shipped name matches


def test_bare_file_name_in_cwd_gets_a_hint(tmp_path, monkeypatch):
    _write_profile(tmp_path, "board")
    (tmp_path / "board.yaml").rename(tmp_path / "board")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(EdgekdError, match="unknown target 'board'") as err:
        load_target("board")
    assert "./board" in err.value.fix
    assert load_target("./board").name == "board"


def test_gate_from_inside_runs(tmp_path, monkeypatch, capsys):
    """`edgekd gate x86-cpu/report.json --target x86-cpu` from a folder that holds the run dir `x86-cpu/`."""
    from test_gate import make_report

    run = tmp_path / "runs" / "x86-cpu"
    run.mkdir(parents=True)
    (run / "report.json").write_text(json.dumps(make_report()))
    monkeypatch.chdir(tmp_path / "runs")
    assert main(["gate", "x86-cpu/report.json", "--target", "x86-cpu"]) in (0, 1)  # 2 would be bad input
    monkeypatch.chdir(tmp_path)
    assert main(["gate", "runs/x86-cpu/report.json", "--target", "x86-cpu"]) in (0, 1)
    assert "error" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------- extras
def test_each_shipped_target_names_its_extras():
    extras = {t.name: required_extras(t) for t in list_targets()}
    assert extras == {"x86-cpu": ["openvino"], "rpi4": ["tflite"], "jetson-orin-nano": ["onnx"],
                      "android-nnapi": ["tflite"]}
    assert "# install: pip install 'edgekd[openvino]'" in describe_target(load_target("x86-cpu"))


def _hide_modules(monkeypatch, *hidden: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in hidden else real(name, *a))


def test_missing_extra_is_named(monkeypatch):
    _hide_modules(monkeypatch, "litert_torch")
    assert missing_extras(load_target("rpi4")) == ["tflite"]
    assert missing_extras(load_target("x86-cpu")) == []
    with pytest.raises(EdgekdError, match="litert_torch") as err:
        require_extras(load_target("android-nnapi"))
    assert err.value.fix == "pip install 'edgekd[tflite]'"
    assert "not installed here: tflite" in describe_target(load_target("rpi4"))


def test_build_stops_before_loading_data_when_an_extra_is_missing(monkeypatch, capsys):
    import edgekd.api

    _hide_modules(monkeypatch, "nncf")

    def no_data(*args, **kwargs):
        raise AssertionError("data was loaded before the extras check")

    monkeypatch.setattr(edgekd.api, "load_dataset", no_data)
    assert main(["build", "--target", "x86-cpu"]) == 2
    assert "pip install 'edgekd[openvino]'" in capsys.readouterr().err


def test_extras_table_matches_pyproject():
    """EXTRA_MODULES / EXTRA_INCLUDES say what pyproject.toml's extras install, in import names."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra, modules in EXTRA_MODULES.items():
        includes = [r for r in extras[extra] if r.startswith("edgekd[")]
        dists = [re.split(r"[=<>!~; \[]", r, maxsplit=1)[0] for r in extras[extra] if r not in includes]
        assert tuple(d.replace("-", "_") for d in dists) == modules, extra
        assert includes == [f"edgekd[{sub}]" for sub in EXTRA_INCLUDES.get(extra, ())], extra
