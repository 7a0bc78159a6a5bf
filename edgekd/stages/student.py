"""Stage: choose the student, then pre-flight it — before the teacher pass or any distillation epoch.

The choice is by MACs (``models/budget.py``) or by latency measured on the target's runtime (``edgekd.selection``):
``--selection auto`` measures when the target states a student latency budget, runs on a CPU runtime, and the
timings can be taken where it matters (this host is the device, or ``--device USER@HOST``). Then, once the teacher
is ready, ``--selection auto`` ranks the students that fit by the accuracy a short distillation reaches
(``rank_by_accuracy``, ``selection/accuracy_search.py``) whenever that fits its cost bound.

Pre-flight: the chosen student, with random weights, exported in every format x precision the target ships, loaded
in each real runtime, run once, its operators checked against the target's delegate — so a conversion or delegate
failure costs seconds, not a teacher and a distillation. A candidate that fails is dropped with its reason and the
next best is tried (at most ``MAX_PREFLIGHT``); when none passes the build stops (exit 2) naming why.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgekd.backends import Calibration
from edgekd.device_identity import match
from edgekd.distill.trainer import TrainConfig
from edgekd.errors import EdgekdError
from edgekd.models.budget import StudentChoice, count_macs, ranked_students
from edgekd.runner import RunnerError, describe_machine, load_session
from edgekd.selection import enumerate_candidates, select_by_latency
from edgekd.selection.accuracy_search import ETA, RULE, Finalist, search
from edgekd.selection.candidates import candidate_name
from edgekd.selection.finalists import fitting_from_record, of_candidate, pick, time_candidates
from edgekd.selection.search import CAPACITY_RULE, mac_capacity
from edgekd.selection.timing import Timer
from edgekd.stages.context import BuildContext
from edgekd.stages.export import operator_report, shipped_combinations
from edgekd.stages.teacher import Teachers, default_teacher_model, load_user_teacher
from edgekd.targets import TargetProfile
from edgekd.text.students import ranked_students as ranked_text

MAX_PREFLIGHT = 3  # candidates tried before the build gives up: a delegate gap usually rejects a whole family
CPU_DELEGATES = ("none", "xnnpack")


def latency_budget(target: TargetProfile) -> tuple[float, int, str] | None:
    """(ms, percentile, where it comes from) of the latency the shipped student must meet, or None when the target
    states none: student_budget.latency_ms, else the gate's latency_ms_p95."""
    sb, b = target.student_budget, target.budgets
    if sb.latency_ms is not None:
        return sb.latency_ms, sb.latency_percentile, "student_budget.latency_ms"
    if b.latency_ms_p95 is not None:
        return b.latency_ms_p95, 95, "budgets.latency_ms_p95"
    return None


def _host_is_device(ctx: BuildContext) -> bool:
    return match(ctx.target, describe_machine(), ctx.options.as_target).is_target


def selection_mode(ctx: BuildContext) -> tuple[str, str]:
    """(mac | latency, why): ``auto`` picks latency only where a measured latency means something."""
    o, t = ctx.options, ctx.target
    cpu = t.runtime.delegate in CPU_DELEGATES
    if o.selection == "mac":
        return "mac", "--selection mac"
    if o.selection == "latency":
        if latency_budget(t) is None:
            raise EdgekdError(f"--selection latency, but target '{t.name}' states no latency budget",
                              "set student_budget.latency_ms (or budgets.latency_ms_p95) in the target file")
        if not cpu:
            raise EdgekdError(f"--selection latency: target '{t.name}' runs on the {t.runtime.delegate} delegate, "
                              "which a CPU run of the runner cannot time", "use --selection mac for this target")
        return "latency", "--selection latency"
    if t.student_budget.latency_ms is None:
        return "mac", "auto: the target states no student_budget.latency_ms"
    if not cpu:
        return "mac", f"auto: the {t.runtime.delegate} delegate cannot be timed by a CPU run"
    if o.device:
        return "latency", f"auto: student latency budget, timed on {o.device}"
    if _host_is_device(ctx):
        return "latency", "auto: student latency budget, and this host is the target device"
    return "mac", "auto: this host is not the target device and no --device was given (a host proxy would mislead)"


def teacher_macs_before_training(ctx: BuildContext) -> int:
    """The teacher's MACs without any teacher pass: the default architecture untrained, or the user's file."""
    o, data = ctx.options, ctx.data
    if o.teacher:
        teacher = load_user_teacher(ctx, o.teacher)
        if "macs" in teacher.config:  # a teacher outside PyTorch (ONNX, scikit-learn) counted its own graph
            return int(teacher.config["macs"])
        model = teacher.model
    else:
        model = default_teacher_model(o, data)[1]
    return count_macs(model, data.input_shape)


def ranked_by_latency(ctx: BuildContext, why: str) -> tuple[list[StudentChoice], dict[str, Any]]:
    """Candidates inside the latency budget, most capable first, and the search record. The limits are the latency
    budget, max_params and (when set) max_macs; the teacher-MACs ratio is not applied: it stands in for a speed
    limit when there is no measured one."""
    t, data, o = ctx.target, ctx.data, ctx.options
    stated_ms, percentile, source = latency_budget(t)
    headroom = t.student_budget.latency_headroom
    budget_ms = stated_ms * headroom
    candidates, enumerated = enumerate_candidates(data.input_shape, data.num_classes, t.student_budget,
                                                  t.student_budget.max_macs)
    if not candidates:
        raise EdgekdError(f"no student candidate has at most {t.student_budget.max_params} params",
                          "raise student_budget.max_params in the target file")
    timer = Timer(t, data.input_shape, data.num_classes, data.x_train[:64],
                  None if o.teacher_cache is None else Path(o.teacher_cache), o.device,
                  host_is_device=o.device is None and _host_is_device(ctx), threads=ctx.threads)
    sel = select_by_latency(candidates, timer, budget_ms, percentile, log=ctx.say)
    mac = _mac_selected(ctx) if o.selection == "auto" else None
    if mac is not None:  # the accuracy search's finalists must have been timed to be finalists
        must = [c for c in candidates if c.name == mac.name]
        timed = time_candidates(candidates, sel, timer, budget_ms, percentile, must)
        ctx.say(f"selection: {len(timed)} more candidate(s) timed for the accuracy search's finalists")
    record = {**sel.record, "mac_selected": mac and mac.name, "why": why, "budget_source": source,
              "stated_budget_ms": stated_ms, "headroom": headroom, "enumerated": enumerated}
    rule = (f"latency p{percentile} <= {budget_ms:.4g} ms measured ({stated_ms:.4g} ms x headroom {headroom}); "
            f"then {CAPACITY_RULE}")
    choices = [StudentChoice(c.family, c.config, c.params, c.macs, t.student_budget.max_params,
                             t.student_budget.max_macs, enumerated, len(sel.ranked), rule) for c in sel.ranked]
    return choices, record


def _mac_selected(ctx: BuildContext) -> Finalist | None:
    """What ``--selection mac`` would choose (before pre-flight), a finalist whenever it fits the latency budget;
    None when nothing fits the MAC budget."""
    data = ctx.data
    try:
        best = ranked_students(data.input_shape, data.num_classes, ctx.target.student_budget,
                               teacher_macs_before_training(ctx))[0]
    except EdgekdError:
        return None
    return Finalist(best.family, best.config, best.params, best.macs, why="the MAC-selected student")


def finalists(ctx: BuildContext, base: Finalist, record: dict[str, Any], max_macs: int | None) -> list[Finalist]:
    """The accuracy search's finalists, ``base`` (the budget's own choice, after pre-flight) first: in latency mode
    the candidates timed inside the budget, in MAC mode every family and resolution inside the MAC limits."""
    data = ctx.data
    if record["mode"] == "latency":
        fitting = fitting_from_record(record)
        mac = next((f for f in fitting if f.name == record.get("mac_selected")), None)
    else:
        found, _ = enumerate_candidates(data.input_shape, data.num_classes, ctx.target.student_budget, max_macs)
        fitting = [of_candidate(c) for c in sorted(found, key=mac_capacity, reverse=True)]
        mac = None  # MAC mode: the base is the MAC-selected student
    return pick(base, fitting, mac)


def rank_by_accuracy(ctx: BuildContext, config: TrainConfig, teachers: Teachers, choice: StudentChoice
                     ) -> StudentChoice:
    """``--selection auto``: the finalist reaching the best proxy accuracy (``selection.accuracy_search``) when the
    search fits its cost bound, else ``choice``; the record says which rule chose the student and why."""
    record = dict(choice.selection or {})
    if ctx.options.selection != "auto" or not record or ctx.data.is_text:  # its finalists are image candidates
        return choice
    latency = next((f.latency_ms for f in (fitting_from_record(record) if record["mode"] == "latency" else [])
                    if f.name == candidate_name(choice.family, choice.config)), None)
    base = Finalist(choice.family, choice.config, choice.params, choice.macs,
                    why=f"the budget's own choice ({record['mode']} rule, passed pre-flight)", latency_ms=latency)
    more = functools.partial(finalists, ctx, base, record, choice.max_macs)
    outcome = search(base, more, ctx.data, config, teachers.models, functools.partial(expected_build_s, ctx, config),
                     log=ctx.say)
    record["accuracy"] = outcome.record
    record["chosen_by"], record["chosen_why"] = record["mode"], outcome.record["why"]
    if outcome.chosen is None or outcome.chosen.name == base.name:
        return dataclasses.replace(choice, selection=record)
    checks = record["preflight"] = list(record.get("preflight", []))
    for f in outcome.ranking[:MAX_PREFLIGHT]:
        if f.name == base.name:
            break
        check = preflight(ctx, StudentChoice(f.family, f.config, f.params, f.macs, 0, None, 0, 0))
        checks.append(check)
        if check["passed"]:
            record["chosen_by"] = "accuracy"
            record["chosen_why"] = outcome.record["why"] if f is outcome.chosen else (
                f"{f.name}: the best proxy accuracy that passed pre-flight")
            ctx.say(f"student (by proxy accuracy): {f.name} -> {f.params} params, {f.macs} MACs")
            _mark_accuracy_choice(record, f.name)
            return dataclasses.replace(choice, family=f.family, config=f.config, params=f.params, macs=f.macs,
                                       rule=RULE.format(eta=ETA), selection=record)
    record["chosen_why"] = "the better finalists failed pre-flight: the budget's own choice stands"
    return dataclasses.replace(choice, selection=record)


def _mark_accuracy_choice(record: dict[str, Any], name: str) -> None:
    """The latency search's rows: the accuracy winner becomes the chosen one (the shipped artifact is compared with
    its timing), the candidate the latency rule chose an accepted one."""
    for row in record.get("candidates", []):
        if row["name"] == name:
            row.update(status="chosen", reason=f"{row['reason'].split(', less capable')[0]}; the best proxy accuracy")
        elif row["status"] == "chosen":
            row.update(status="accepted", reason="inside the budget, most capable, lower proxy accuracy")


def expected_build_s(ctx: BuildContext, config: TrainConfig, step_s: float) -> float:
    """What the build has taken so far plus its distillation at ``step_s`` per step (both runs with --baseline);
    export and benchmark are left out, so the estimate and the cost cap it sets err low."""
    steps = config.epochs * math.ceil(len(ctx.data.y_train) / config.batch_size)
    return sum(ctx.stage_times_s.values()) + steps * step_s * (2 if ctx.options.baseline else 1)


def _check_artifact(ctx: BuildContext, artifact: Any, x: np.ndarray) -> dict[str, Any]:
    """Load in the real runtime, run once, check the operators against the delegate; raises with the reason."""
    try:
        out = load_session(str(artifact.path), 1, artifact.precision).run(x)
    except RunnerError as exc:
        raise EdgekdError(f"{artifact.format} {artifact.precision} does not run in {artifact.runtime}: {exc}") \
            from None
    if out.shape != (1, ctx.data.num_classes) or not np.isfinite(out).all():
        raise EdgekdError(f"{artifact.format} {artifact.precision} returns {list(out.shape)} "
                          f"(finite: {bool(np.isfinite(out).all())}), expected [1, {ctx.data.num_classes}]")
    ops = operator_report(ctx, artifact)  # raises ContractError when full delegation is required and fails
    return {"format": artifact.format, "precision": artifact.precision, "runtime": artifact.runtime,
            "operators": len(ops["operators"]), "delegate": ops.get("delegate")}


def preflight(ctx: BuildContext, choice: StudentChoice) -> dict[str, Any]:
    """Every format x precision the target ships, on random weights; ``passed`` False with the reason."""
    t0, data = time.perf_counter(), ctx.data
    torch.manual_seed(ctx.options.seed)
    model = choice.build(data.input_shape, data.num_classes).eval()
    calib = Calibration(data.x_train[:32], {"source": "pre-flight: training samples"})
    name = candidate_name(choice.family, choice.config)
    result: dict[str, Any] = {"name": name, "config": choice.config, "passed": True, "reason": "", "artifacts": []}
    with tempfile.TemporaryDirectory(prefix="edgekd-preflight-") as tmp:
        for fmt, backend, suffix, precision in shipped_combinations(ctx):
            try:
                artifact = backend.export(model, data.x_val[:1], Path(tmp) / f"{fmt}_{precision}{suffix}",
                                          precision, calib if precision == "int8" else None)
                result["artifacts"].append(_check_artifact(ctx, artifact, data.x_val[:1]))
            except Exception as exc:  # noqa: BLE001 - any failure here is the candidate's, with its reason
                message = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0][:300]
                result.update(passed=False, reason=f"{fmt} {precision}: {message}")
                result["seconds"] = round(time.perf_counter() - t0, 2)
                return result
    result["seconds"] = round(time.perf_counter() - t0, 2)
    return result


def choose_student(ctx: BuildContext) -> StudentChoice:
    """The best feasible student that passes pre-flight, with the record of the search (``choice.selection``)."""
    data, budget = ctx.data, ctx.target.student_budget
    mode, why = selection_mode(ctx)
    if data.is_text:  # the text registry's widths; the latency search enumerates image candidates

        mode, why = "mac", "text: the text family's widths sized by the budget"
        ranked, record = ranked_text(data, budget, teacher_macs_before_training(ctx)), {"mode": "mac", "why": why}
    elif mode == "latency":
        ranked, record = ranked_by_latency(ctx, why)
    else:
        ranked = ranked_students(data.input_shape, data.num_classes, budget, teacher_macs_before_training(ctx))
        record = {"mode": "mac", "why": why}
    ctx.say(f"student selection by {mode} ({why})")
    checks = []
    for choice in ranked[:MAX_PREFLIGHT]:
        check = preflight(ctx, choice)
        checks.append(check)
        ctx.say(f"pre-flight: {check['name']}: " + (f"ok in {check['seconds']:.1f}s ({len(check['artifacts'])} "
                                                     "artifacts exported, loaded, run once, operators checked)"
                                                     if check["passed"] else f"DROPPED: {check['reason']}"))
        if check["passed"]:
            _mark_preflight(record, checks)
            ctx.say(f"student: {choice.family} {choice.config} -> {choice.params} params, {choice.macs} MACs "
                    f"(budget {choice.max_params} params, {choice.max_macs or 'no limit on'} MACs)")
            return dataclasses.replace(choice, selection={**record, "preflight": checks})
    reasons = "; ".join(f"{c['name']}: {c['reason']}" for c in checks)
    raise EdgekdError(
        f"pre-flight: none of the {len(checks)} best feasible student(s) of {len(ranked)} can ship to target "
        f"'{ctx.target.name}' ({reasons}); stopped before the teacher pass and any training",
        "fix the target's runtime (format, precision, delegate, require_full_delegation) or its student_budget")


def _mark_preflight(record: dict[str, Any], checks: list[dict[str, Any]]) -> None:
    """Candidates that failed pre-flight are rejected with the reason; the one that passed is the chosen one."""
    by_name = {c["name"]: c for c in checks}
    for row in record.get("candidates", []):
        check = by_name.get(row["name"])
        if check is not None and not check["passed"]:
            row.update(status="rejected", reason=f"pre-flight: {check['reason']}")
        elif check is not None:
            row.update(status="chosen", reason=row["reason"].replace(
                ", less capable than the chosen", ": the most capable that passed pre-flight"))
