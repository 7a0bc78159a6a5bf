"""The student ``edgekd build --selection auto`` ships under a latency budget vs the one the MAC budget picks.

    python benchmarks/latency_selection.py --quick --out /tmp/ls.json   # digits, x86-cpu, 1 budget, 2 seeds: it runs
    python benchmarks/latency_selection.py \\
        --data ../shared/datasets/fashion-mnist,../shared/datasets/cifar10/cifar10-jpg.tar.gz \\
        --targets x86-cpu,rpi4 --budget-fractions 0.75,1.25,1.5,2.5 --seeds 0,1,2        # the measurement (hours)

For each data set and target: the MAC-selected student (``models.budget``: the target's max_macs and teacher ratio)
is timed on this host as it ships (primary format, int8); each budget is a fraction of its p95. For each budget the
selection runs as a build's ``--selection auto`` does: the latency search (``selection.search``), the timing of the
candidates that matter (the MAC-selected student and each group's best predicted to fit, ``selection.finalists``),
then the accuracy search over the finalists (``selection.accuracy_search``: a short distillation from cached teacher
logits scored on the validation split, successive halving, capped at 20 % of the build's expected time). Its cost is
``selection_cost_s`` (latency + accuracy search) and its share of a build from a cached teacher
(``selection_cost_pct_of_build``: cost / (cost + the chosen student's distillation, seed 0)).

Both students are then distilled identically from the same teacher (benchmarks/.cache, shared with kd_quality.py)
once per seed, exported with their trained weights and timed again (seed 0): those are the p50/p95; ``accuracy``
is the mean test accuracy over the seeds (scored once each, after training; the best epoch chosen on validation),
``accuracy_std`` its standard deviation. ``prediction_error_pct``: median |NNLS predicted - measured| / measured
p95 of the selected, shipped students.

Resumable: each finished piece (a data set x target's MAC student; each budget's row) is kept, with the commit, load
and time it ran at, in ``benchmarks/.cache/latency_selection/<recipe hash>.json``, keyed by the settings and this
host's CPU (model, flags, cores), so a stop loses only the piece in flight and a piece timed on another machine is
never mixed in. Rerun the same command to go on; a piece that ran on a busy host is measured again by the next
command, and until then makes the file "invalid: host busy". ``--quick`` keeps its state in a fresh temporary
folder unless ``--cache-dir`` is given.

The verdict (computed from the rows, ``judge_row``): where the MAC student meets the budget, the selected student
meets it after training and quantization and its mean accuracy is at least the MAC student's minus the seeds'
spread (the larger of the two standard deviations); in at least 2 rows it is better by more than that spread.
Where the MAC student breaks the budget, the MAC rule has nothing deployable to compare with: the selected student
must meet the budget (the accuracy gap is reported). A budget under the runtime's floor, where nothing fits and
neither rule can ship a student, is reported as infeasible and not judged; each data set x target needs at least
``MIN_BUDGETS`` judged budgets. The default budgets: one under the MAC student (0.75: on x86 OpenVINO int8 a 28x28
student sits at the runtime's ~0.15 ms floor, so tighter ones are infeasible there) and three over it, the first
(1.25 x the 0.8 headroom = 1.0) putting the MAC student right at the line the selection aims under. Timings on
this host are the real thing for x86-cpu and a *host proxy* for rpi4 (labelled per row).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))
sys.path.insert(0, str(ROOT))

from _provenance import Recorder, host_identity, stamped  # noqa: E402
from _state import ResumeState  # noqa: E402
from kd_quality import default_recipe, teacher_for  # noqa: E402

from edgekd.data import load_dataset  # noqa: E402
from edgekd.device_identity import match  # noqa: E402
from edgekd.distill.trainer import TrainConfig, accuracy, train  # noqa: E402
from edgekd.errors import EdgekdError  # noqa: E402
from edgekd.io import write_json  # noqa: E402
from edgekd.models.budget import count_macs, ranked_students  # noqa: E402
from edgekd.runner import describe_machine  # noqa: E402
from edgekd.selection import enumerate_candidates, select_by_latency  # noqa: E402
from edgekd.selection.accuracy_search import search  # noqa: E402
from edgekd.selection.candidates import Candidate  # noqa: E402
from edgekd.selection.finalists import fitting_from_record, of_candidate, pick, time_candidates  # noqa: E402
from edgekd.selection.timing import Timer  # noqa: E402
from edgekd.targets import load_target  # noqa: E402

DATASETS = ROOT.parent.parent / "shared" / "datasets"
DEFAULT_DATA = f"{DATASETS / 'fashion-mnist'},{DATASETS / 'cifar10' / 'cifar10-jpg.tar.gz'}"
ROWS = "budgets"  # the key verdict() reads (tests/test_benchmarks_quick.py recomputes it)
DEFAULT_FRACTIONS = "0.75,1.25,1.5,2.5"  # of the MAC student's p95 (the docstring says why)
QUIET_LOAD = 2.5  # timings on the 2-core host need it nearly idle (this script's own runner included)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help=f"comma-separated data sets (default {DEFAULT_DATA}; --quick: digits)")
    p.add_argument("--quick", action="store_true", help="digits, x86-cpu, one budget, 2 seeds, 4 epochs: a smoke run")
    p.add_argument("--targets", help="comma-separated (default x86-cpu,rpi4; --quick: x86-cpu)")
    p.add_argument("--budget-fractions", help="latency budgets as fractions of the MAC student's measured p95 "
                                              f"(default {DEFAULT_FRACTIONS}; --quick 3: a smoke run must find a "
                                              "student on a noisy CI host)")
    p.add_argument("--seeds", help="student seeds (default 0,1,2; --quick 0,1)")
    p.add_argument("--max-train", type=int, help="train+val samples loaded (default 20000; --quick all of digits)")
    p.add_argument("--train-samples", type=int, help="students distil on the first N training samples (default all)")
    p.add_argument("--epochs", type=int, help="student epochs, both students alike (default 8; --quick 4)")
    p.add_argument("--teacher-epochs", type=int, help="default 10; --quick 2")
    p.add_argument("--teacher-widths", default="32,64,128")
    p.add_argument("--max-measure", type=int, help="new timings per latency search at most (default 12; --quick 8)")
    p.add_argument("--threads", type=int, default=1, help="runtime threads for every timing (default 1: on a "
                   "shared machine more threads time the contention, not the model; 0 = the target's)")
    p.add_argument("--cache-dir", help="resumable state (default benchmarks/.cache; --quick: a fresh temporary "
                                        "folder)")
    p.add_argument("--out", default=str(ROOT / "results" / "latency_selection.json"))
    args = p.parse_args(argv)
    quick = args.quick
    args.data = (args.data or ("digits" if quick else DEFAULT_DATA)).split(",")
    args.targets = (args.targets or ("x86-cpu" if quick else "x86-cpu,rpi4")).split(",")
    args.budget_fractions = [float(f) for f in (args.budget_fractions or ("3" if quick else DEFAULT_FRACTIONS))
                             .split(",")]
    args.seeds = [int(s) for s in (args.seeds or ("0,1" if quick else "0,1,2")).split(",")]
    args.max_train = args.max_train or (None if quick else 20000)
    args.epochs = args.epochs or (4 if quick else 8)
    args.teacher_epochs = args.teacher_epochs or (2 if quick else 10)
    args.max_measure = args.max_measure or (8 if quick else 12)
    args.cache_dir = args.cache_dir or (tempfile.mkdtemp(prefix="edgekd-latsel-state-") if quick
                                        else str(ROOT / ".cache"))
    return args


# Settings that shape every piece (data sets, targets and budgets name the pieces instead, so a partial command's
# pieces serve the full one).
RECIPE_ARGS = ("quick", "seeds", "max_train", "train_samples", "epochs", "teacher_epochs", "teacher_widths",
               "max_measure", "threads")
# 2: candidates timed in 3 fresh processes, p50/p95 their medians (selection/timing.TIMING_PROCESSES)
# 3: the budget's own choice and the MAC student train every rung of the accuracy search (Finalist.protected)
STATE_VERSION = 3
# What each piece keeps of its own provenance (the file's block covers only the command that wrote it)
PIECE_RAN = {"commit", "dirty", "started_utc", "loadavg_before", "loadavg_after", "loadavg_max_1min", "host_busy",
             "wall_s"}


class Pieces(ResumeState):
    """The finished pieces of the measurement with when, where and at what load each ran: a stop loses only the piece
    in flight, and the file's host check covers every piece it is built from, not only this command's start and end."""

    def __init__(self, args):
        recipe = {"version": STATE_VERSION, **{k: getattr(args, k) for k in RECIPE_ARGS}, "host": host_identity()}
        super().__init__(args.cache_dir, "latency_selection", recipe, {"pieces": {}})
        self.quick, self.used, self.resumed = args.quick, [], set()

    def get_or_run(self, key: str, work, say):
        """The piece's value, from the state when it finished earlier, else ``work()`` timed and stored at once."""
        self.used.append(key)
        done = self.doc["pieces"].get(key)
        if done and not done["ran"]["host_busy"]:
            say(f"{key}: finished earlier (state {self.path.name}): reused")
            self.resumed.add(key)
            return done["value"]
        if done:  # its timings are not evidence: measured again rather than tainting every later file
            say(f"{key}: ran on a busy host (load {done['ran']['loadavg_before'][0]} -> "
                f"{done['ran']['loadavg_after'][0]}): measuring it again")
        recorder = Recorder(quick=self.quick, quiet_load=QUIET_LOAD)
        value = work()
        self.doc["pieces"][key] = {"value": value, "ran": recorder.finish().model_dump(include=PIECE_RAN)}
        write_json(self.path, self.doc)
        return value

    def record(self) -> list[dict]:
        """Each piece this file is built from: its key, when and at what commit and load it ran, reused or not."""
        return [{"piece": k, **self.doc["pieces"][k]["ran"], "resumed": k in self.resumed} for k in self.used]

    def any_busy(self) -> bool:
        return any(self.doc["pieces"][k]["ran"]["host_busy"] for k in self.used)


def subset(data, samples: int | None):
    return data if samples is None else dataclasses.replace(data, x_train=data.x_train[:samples],
                                                            y_train=data.y_train[:samples])


def distill(family: str, config: dict, data, teacher, epochs: int, seed: int) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(seed)
    model = Candidate(family, config, 0, 0).build(data.input_shape, data.num_classes)
    result = train(model, data, TrainConfig(epochs=epochs, seed=seed, label="student"), teacher=teacher,
                   progress=False)
    return result.model, {"accuracy": accuracy(result.model, data.x_test, data.y_test),
                          "val_accuracy": accuracy(result.model, data.x_val, data.y_val),
                          "train_time_s": round(result.train_time_s, 1)}


def student_row(timer: Timer, family: str, config: dict, macs: int, data, teacher, args, budget_ms: float | None,
                say) -> dict:
    """Distilled once per seed; the seed-0 model exported and timed as it ships."""
    runs = [distill(family, config, data, teacher, args.epochs, seed) for seed in args.seeds]
    t = timer.time_models({"trained": runs[0][0].eval()})["trained"]
    accs = [r[1]["accuracy"] for r in runs]
    row = {"family": family, "config": config, "macs": macs, "p50_ms": t.p50, "p95_ms": t.p95,
           "noise_pct": t.noise_pct, "accuracy": statistics.fmean(accs),
           "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0, "accuracies": accs,
           "val_accuracies": [r[1]["val_accuracy"] for r in runs], "train_time_s": runs[0][1]["train_time_s"]}
    if budget_ms is not None:
        row["meets_budget"] = t.p95 <= budget_ms
    say(f"  {family} {config}: acc {row['accuracy']:.4f} +- {row['accuracy_std']:.4f}, p95 {t.p95:.4f} ms")
    return row


def select(candidates, timer: Timer, budget_ms: float, mac: Candidate, data, teacher, args, teacher_s: float,
           say) -> dict:
    """What --selection auto does: latency search, the candidates that matter timed, the accuracy search."""
    t0 = time.perf_counter()
    sel = select_by_latency(candidates, timer, budget_ms, 95, max_measure=args.max_measure, log=say)
    time_candidates(candidates, sel, timer, budget_ms, 95, [c for c in candidates if c.name == mac.name])
    fitting = fitting_from_record(sel.record)
    base = next(f for f in fitting if f.name == sel.ranked[0].name)
    finalists = pick(dataclasses.replace(base, why="the latency rule's choice"), fitting,
                     next((f for f in fitting if f.name == mac.name), None))
    latency_s = time.perf_counter() - t0
    steps = args.epochs * math.ceil(len(data.y_train) / 64)
    outcome = search(finalists[0], lambda: finalists, data, TrainConfig(epochs=args.epochs, seed=0), [teacher],
                     lambda step_s: teacher_s + latency_s + steps * step_s, log=say)
    chosen = outcome.chosen or finalists[0]
    predicted = next((r["predicted_ms"] for r in sel.record["candidates"] if r["name"] == chosen.name), None)
    return {"chosen": chosen, "chosen_by": "accuracy" if outcome.chosen else "latency", "predicted_ms": predicted,
            "latency_search": {k: sel.record[k] for k in ("measured", "reused", "confirmations", "predicted_only",
                                                          "time_s")}
            | {"predictor": sel.record["predictor"]["summary"]},
            "accuracy_search": outcome.record, "cost_s": round(time.perf_counter() - t0, 2)}


def mac_piece(timer: Timer, mac, data, teacher, args, name: str, say) -> dict:
    """The MAC-selected student timed untrained and shipped (distilled per seed): the budgets are fractions of it."""
    mac_cand = of_candidate(Candidate(mac.family, mac.config, mac.params, mac.macs))
    mac_t = timer.time_models({"mac": mac_cand.build(data.input_shape, data.num_classes).eval()})["mac"]
    say(f"{name}: MAC-selected {mac_cand.name} ({mac.macs / 1e6:.2f} M MACs): p95 {mac_t.p95:.4f} ms untrained")
    row = student_row(timer, mac.family, mac.config, mac.macs, data, teacher, args, None, say)
    return {"untrained_p95_ms": mac_t.p95, "row": row}


def budget_piece(name: str, frac: float, timer: Timer, target, mac, base: dict, candidates, data, teacher, args,
                 teacher_s: float, say) -> dict:
    """One budget's row: the selection as a build runs it, then the chosen student distilled per seed and timed."""
    mac_row = base["row"]
    budget = round(frac * min(base["untrained_p95_ms"], mac_row["p95_ms"]), 5)
    headroom = target.student_budget.latency_headroom
    timer.measured = timer.confirmations = 0  # each budget's selection has its own caps, as a build
    say(f"{name} budget {budget:.4f} ms (x headroom {headroom})")
    common = {"target": name, "latency_budget_ms": budget, "budget_fraction_of_mac_p95": frac,
              "mac_selected": {**mac_row, "meets_budget": mac_row["p95_ms"] <= budget}}
    t0 = time.perf_counter()
    try:
        picked = select(candidates, timer, budget * headroom, Candidate(mac.family, mac.config, 0, 0), data,
                        teacher, args, teacher_s, say)
    except EdgekdError as exc:  # nothing fits: the search's cost is still part of the evidence
        return {**common, "latency_selected": None, "selection_cost_s": round(time.perf_counter() - t0, 2),
                "note": exc.problem}
    chosen = picked["chosen"]
    row = student_row(timer, chosen.family, chosen.config, chosen.macs, data, teacher, args, budget, say)
    build_s = picked["cost_s"] + row["train_time_s"]
    return {**common, "format": timer.format, "precision": timer.precision, "threads": timer.threads,
            "host_proxy": not timer.host_is_device, "selected_under_ms": round(budget * headroom, 6),
            "headroom": headroom,
            "latency_selected": {**row, "chosen_by": picked["chosen_by"], "predicted_p95_ms": picked["predicted_ms"]},
            "selection_cost_s": picked["cost_s"],
            "selection_cost_pct_of_build": round(100.0 * picked["cost_s"] / build_s, 2),
            "latency_search": picked["latency_search"], "accuracy_search": picked["accuracy_search"]}


def run_target(name: str, args, data, data_key: str, teacher, teacher_macs: int, teacher_s: float, pieces: Pieces,
               say) -> list[dict]:
    target = load_target(name)
    cache = Path(tempfile.mkdtemp(prefix="edgekd-latsel-"))  # empty: every selection is timed cold
    on_device = match(target, describe_machine()).is_target
    timer = Timer(target, data.input_shape, data.num_classes, data.x_train[:64], cache,
                  threads=args.threads or target.runtime.usable_threads, host_is_device=on_device)
    mac = ranked_students(data.input_shape, data.num_classes, target.student_budget, teacher_macs)[0]
    prefix = f"{data_key}/{name}"
    base = pieces.get_or_run(f"{prefix}/mac", lambda: mac_piece(timer, mac, data, teacher, args, name, say), say)
    candidates, _ = enumerate_candidates(data.input_shape, data.num_classes, target.student_budget)
    return [pieces.get_or_run(f"{prefix}/{frac:g}",
                              lambda frac=frac: budget_piece(name, frac, timer, target, mac, base, candidates, data,
                                                             teacher, args, teacher_s, say), say)
            for frac in args.budget_fractions]


def prediction_error_pct(rows: list[dict]) -> float | None:
    """Median |NNLS predicted - measured| / measured p95 of the selected, shipped students."""
    errors = [abs(s["predicted_p95_ms"] - s["p95_ms"]) / s["p95_ms"] * 100.0
              for s in (r.get("latency_selected") for r in rows) if s and s.get("predicted_p95_ms")]
    return statistics.median(errors) if errors else None


MIN_BUDGETS = 3  # judged budgets per data set x target (the issue: at least 3 each)


def judge_row(r: dict) -> dict:
    """One budget's judgement. Nothing selected and the MAC student over the budget too: infeasible on this runtime
    (below its floor: no rule could ship a student), reported and not judged. The MAC student over the budget: the
    MAC rule ships nothing deployable, so the selected one must meet the budget; the accuracy gap is reported.
    Else the selected student meets the budget and is not worse than the MAC one beyond the seeds' spread."""
    sel, mac = r.get("latency_selected"), r["mac_selected"]
    head = {"data": r.get("data"), "target": r["target"], "budget_ms": r["latency_budget_ms"],
            "mac_meets_budget": bool(mac["meets_budget"])}
    if sel is None:
        return {**head, "judged": bool(mac["meets_budget"]), "ok": False,
                "why": ("" if mac["meets_budget"] else "infeasible: ") + r.get("note", "nothing selected")}
    spread = max(sel["accuracy_std"], mac["accuracy_std"])
    gain = sel["accuracy"] - mac["accuracy"]
    comparable = bool(mac["meets_budget"])
    ok = sel["meets_budget"] and (gain >= -spread or not comparable)
    return {**head, "judged": True, "ok": bool(ok), "gain_points": round(100 * gain, 2),
            "spread_points": round(100 * spread, 2), "meets_budget": sel["meets_budget"],
            "better_beyond_spread": bool(comparable and gain > spread)}


def verdict(rows: list[dict]) -> dict:
    """From the rows alone: every judged row ok, at least 2 better than the MAC student by more than the seeds'
    spread, and at least ``MIN_BUDGETS`` judged budgets for each data set x target."""
    per_row = [judge_row(r) for r in rows]
    judged = [j for j in per_row if j["judged"]]
    counts: dict[tuple, int] = {}
    for r, j in zip(rows, per_row, strict=True):
        key = (r.get("data"), r["target"])
        counts[key] = counts.get(key, 0) + j["judged"]
    better = sum(j.get("better_beyond_spread", False) for j in judged)
    enough = bool(counts) and min(counts.values()) >= MIN_BUDGETS
    return {"passed": bool(judged) and all(j["ok"] for j in judged) and better >= 2 and enough,
            "rows_ok": sum(j["ok"] for j in judged), "rows": len(judged),
            "rows_infeasible": len(per_row) - len(judged), "better_beyond_spread": int(better),
            "judged_budgets_per_data_target_min": min(counts.values()) if counts else 0,
            "min_budgets": MIN_BUDGETS, "per_row": per_row}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recorder = Recorder(quick=args.quick, seeds=args.seeds, quiet_load=QUIET_LOAD)
    t_start = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - t_start:6.0f}s] {message}", flush=True)

    pieces = Pieces(args)
    say(f"state: {pieces.path} ({len(pieces.doc['pieces'])} pieces finished earlier)")
    budgets, datasets = [], []
    for path in args.data:
        if path != "digits" and not Path(path).exists():
            raise SystemExit(f"data {path} not found")
        data = load_dataset(path, seed=0, max_train=args.max_train)
        widths = tuple(int(w) for w in args.teacher_widths.split(","))
        teacher, info = teacher_for(default_recipe(), data, widths, args.teacher_epochs, say)
        students = subset(data, args.train_samples)
        datasets.append({"data": path, "split": [len(data.y_train), len(data.y_val), len(data.y_test)],
                         "student_train_samples": len(students.y_train), "shape": list(data.input_shape),
                         "teacher": {"widths": list(widths), "accuracy": accuracy(teacher, data.x_test, data.y_test),
                                     **info}})
        data_key = students.fingerprint()  # names this data set's pieces (hashing it once, not per target)
        for name in args.targets:
            rows = run_target(name, args, students, data_key, teacher, count_macs(teacher, data.input_shape),
                              info.get("train_time_s") or 0.0, pieces, say)
            budgets += [{"data": path, **r} for r in rows]
    out = {"benchmark": "latency_selection", "datasets": datasets, "student_epochs": args.epochs,
           "seeds": args.seeds, "budgets": budgets,
           "prediction_error_pct": prediction_error_pct(budgets), "pieces": pieces.record(),
           "notes": {"accuracy": "mean test accuracy over the seeds, each scored once after training",
                     "selection_cost_pct_of_build": "selection cost / (selection cost + the chosen student's "
                     "distillation, seed 0): a build from a cached teacher, export and benchmark left out",
                     "timings": f"this host, runner.py in a fresh process, {args.threads or 'the targets'} "
                                "thread(s); a host proxy for rpi4"}}
    ran = recorder.finish()
    if pieces.any_busy():  # a piece this command ran on a busy host taints the file as the command's own load would
        ran = ran.model_copy(update={"host_busy": True})
    out = stamped(out, verdict(budgets), ran)
    write_json(args.out, out)
    v = out["verdict"]
    say(f"wrote {args.out} (verdict: {v if isinstance(v, str) else 'passed' if v['passed'] else 'failed'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
