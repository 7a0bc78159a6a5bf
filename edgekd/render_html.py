"""report.html: one self-contained page (plots embedded as base64 PNG) that a person can open from CI artifacts.

Sections: where it was measured; the teacher / student / artifact table; accuracy vs latency (every artifact and
the teacher); the latency distribution of each artifact (from the runner's raw samples); per-class accuracy of
the student and the shipped artifacts minus the teacher's; device results measured over SSH; the gate.

Plots use matplotlib's object API with the Agg canvas (no pyplot, no global backend switch), so this is safe to
call from any process, threads included, and needs no display.
"""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.devices.report_rows import html_section as device_detail_html
from edgekd.formats import FORMATS
from edgekd.io import write_text
from edgekd.render_md import _budget_words, _drift_words, _num, _pct
from edgekd.schema import Report, Selection, as_report, dump


def _colour(fmt: str) -> str:
    return FORMATS[fmt].colour if fmt in FORMATS else "#444444"


_MARKERS = {"fp32": "o", "fp16": "s", "int8": "D", "dynamic_int8": "^"}


# --------------------------------------------------------------------------------------------- plots
def _figure(width: float, height: float):
    # lazy: matplotlib takes ~0.6 s to import and only report.html's plots use it
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # lazy: as above
    from matplotlib.figure import Figure  # lazy: as above

    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plain(value: Any) -> str:
    """A label drawn from data (class names, file names, host names) as literal text: every ``$`` escaped, so
    matplotlib never parses it as math text (``$x^{$`` would fail the draw after the whole build)."""
    return str(value).replace("$", r"\$")


def _legend_outside(ax) -> None:
    """One legend entry per label (a label drawn several times shows once), right of the axes."""
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _img(b64: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


def accuracy_latency_plot(report: Report) -> str:
    """Accuracy vs p50 latency: every artifact (colour = format, marker = precision, filled = shipped), teacher(s)."""
    fig = _figure(9.0, 4.6)
    ax = fig.add_subplot()
    ys: list[float] = []
    teacher = report.teacher
    for fmt, t in (teacher.by_format or {"": teacher}).items():
        p50 = t.latency_ms.p50
        if p50:
            y = 100 * teacher.accuracy
            ys.append(y)
            ax.scatter([p50], [y], marker="*", s=260, color=_colour(fmt), edgecolor="black", zorder=3,
                       label=_plain(f"teacher ({fmt or 'fp32'})"))
            ax.annotate(_plain(f"teacher {fmt}"), (p50, y), textcoords="offset points", xytext=(8, -12), fontsize=8)
    for i, a in enumerate(report.artifacts):
        p50 = a.latency_ms.p50
        if not p50 or a.accuracy is None:
            continue
        y = 100 * a.accuracy
        ys.append(y)
        color = _colour(a.format)
        ax.scatter([p50], [y], marker=_MARKERS.get(a.precision, "o"), s=70, zorder=3,
                   color=color if a.shipped else "white", edgecolor=color, linewidth=2,
                   label=_plain(f"{a.format} {a.precision}" + (" (shipped)" if a.shipped else "")))
        # Alternate label offsets so that artifacts at the same accuracy don't print over each other.
        ax.annotate(_plain(a.path), (p50, y), textcoords="offset points", xytext=(6, 8 if i % 2 else -14),
                    fontsize=8)
    ys.append(100 * report.student.accuracy)
    ax.axhline(ys[-1], color="#888", linestyle="--", linewidth=1, label="student, PyTorch fp32")
    lo, hi = min(ys), max(ys)
    pad = max(0.25, 0.2 * (hi - lo))
    ax.set_ylim(lo - pad, min(100.0 + pad / 2, hi + pad))
    ax.set_xscale("log")
    ax.margins(x=0.15)
    ax.set_xlabel("p50 latency, ms (batch 1, log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("Accuracy vs latency (up and left is better)")
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(ax)
    return _png(fig)


_STATUS_STYLE = {"chosen": ("#d62728", "*", 260), "accepted": ("#2ca02c", "o", 60), "rejected": ("#999999", "x", 50)}


def selection_plot(sel: Selection) -> str:
    """Latency vs capacity of every candidate the selection timed (predicted ones hollow), with the budget line."""
    fig = _figure(9.0, 4.2)
    ax = fig.add_subplot()
    pct = sel.percentile
    for c in sel.candidates:
        lat = None if c.latency_ms is None else c.latency_ms.value
        y, timed = (lat, True) if lat is not None else (c.predicted_ms, False)
        if not y:
            continue
        colour, marker, size = _STATUS_STYLE[c.status]
        label = f"{c.status} ({'timed' if timed else 'predicted'})"
        style = {"color": colour} if marker == "x" else {
            "color": colour if timed else "white", "edgecolor": colour}
        ax.scatter([c.macs], [y], marker=marker, s=size if timed else size * 0.6, zorder=3, label=label,
                   alpha=1 if timed else 0.6, **style)
        if c.status == "chosen":
            ax.annotate(_plain(c.name), (c.macs, y), textcoords="offset points", xytext=(8, 6), fontsize=8)
    ax.axhline(sel.budget_ms, color="black", linestyle="--", linewidth=1,
               label=f"selected under {sel.budget_ms:.3g} ms (p{pct})")
    if sel.stated_budget_ms:
        ax.axhline(sel.stated_budget_ms, color="black", linestyle=":", linewidth=1,
                   label=f"stated budget {sel.stated_budget_ms:.3g} ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("capacity: MACs per sample (log scale)")
    ax.set_ylabel(f"p{pct} latency, ms (log scale)")
    ax.set_title(_plain(f"Student candidates on {sel.measured_on}: {sel.format} {sel.precision}"))
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(ax)
    return _png(fig)


def selection_section(report: Report) -> list[str]:
    sel = report.student.selection
    if sel is None:
        return []
    out = ["<h2>Student selection</h2>", f"<p>By {_e(sel.mode)}: {_e(sel.why)}.</p>"]
    if sel.mode == "latency":
        proxy = " (a host proxy: not the device)" if sel.host_proxy else ""
        out.append(f"<p>Budget {_e(_budget_words(sel))} at p{_e(sel.percentile)} "
                   f"({_e(sel.budget_source)}); timed on {_e(sel.measured_on)}{proxy}: "
                   f"{_e(sel.measured)} measured, {_e(sel.reused)} reused from the cache, "
                   f"{_e(sel.time_s)} s. {_e(sel.predictor.summary)}.</p>")
        shipped = sel.shipped_prediction
        if shipped:
            out.append(f"<p>Shipped {_e(shipped.artifact)}: predicted {_num(shipped.predicted_ms, '.4f')} ms, "
                       f"timed in selection {_num(shipped.selection_ms, '.4f')} ms, measured "
                       f"{_num(shipped.measured_ms, '.4f')} ms (error {_num(shipped.error_pct, '+.1f')} %; "
                       f"{_e(_drift_words(shipped))}).</p>")
        out.append(_img(selection_plot(sel), "latency vs capacity"))
        rows = [[_e(c.name), _int(c.params), _int(c.macs), _num(c.latency_ms and c.latency_ms.value, ".4f"),
                 _num(c.latency_ms and c.latency_ms.noise_pct, ".1f"), _num(c.predicted_ms, ".4f"),
                 _e(c.status), _e(c.reason)] for c in sel.candidates]
        out.append(_table(["candidate", "params", "MACs", f"p{sel.percentile} ms", "noise %", "predicted ms",
                           "verdict", "why"], rows))
    out += accuracy_search_section(sel, report)
    pre = [[_e(p.name), "passed" if p.passed else "FAILED", _e(p.reason), _num(p.seconds, ".1f"),
            _e(", ".join(f"{a.get('format')} {a.get('precision')}" for a in p.artifacts))] for p in sel.preflight]
    if pre:
        out += ["<h3>Pre-flight (random weights, before the teacher pass)</h3>",
                _table(["candidate", "result", "reason", "s", "checked"], pre)]
    return out


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The points no other beats on both axes (cost lower or equal, accuracy higher or equal), by cost."""
    front, best = [], -np.inf
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


def accuracy_pareto_plot(sel: Selection, budget: float | None) -> str | None:
    """Proxy accuracy vs measured latency (MACs when the choice was by MACs) of the finalists: the Pareto front,
    the budget line, the chosen student marked."""
    by_latency = sel.mode == "latency"
    candidates = [] if sel.accuracy is None else sel.accuracy.candidates
    rows = [(c, c.latency_ms if by_latency else c.macs) for c in candidates
            if c.proxy_accuracy is not None and (c.latency_ms if by_latency else c.macs)]
    if not rows:
        return None
    fig = _figure(9.0, 4.2)
    ax = fig.add_subplot()
    styles = {"chosen": ("#d62728", "*", 260), "eliminated": ("#999999", "o", 50)}
    for c, x in rows:
        colour, marker, size = styles.get(c.status, ("#999999", "x", 50))
        ax.scatter([x], [c.proxy_accuracy], color=colour, marker=marker, s=size, zorder=3, label=c.status)
        ax.annotate(_plain(c.name), (x, c.proxy_accuracy), textcoords="offset points", xytext=(6, 4), fontsize=7)
    front = pareto_front([(x, c.proxy_accuracy) for c, x in rows])
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#1f77b4", linewidth=1,
            label="Pareto front")
    if budget:
        ax.axvline(budget, color="black", linestyle="--", linewidth=1, label=f"budget {budget:.4g}")
    ax.set_xscale("log")
    ax.set_xlabel(f"p{sel.percentile} latency, ms (log scale)" if by_latency else "MACs (log scale)")
    ax.set_ylabel("proxy accuracy (validation, last rung reached)")
    ax.set_title("Finalists of the accuracy search (up and left is better)")
    ax.grid(True, which="both", alpha=0.3)
    _legend_outside(ax)
    return _png(fig)


def accuracy_search_section(sel: Selection, report: Report) -> list[str]:
    acc = sel.accuracy
    if acc is None:
        return []
    out = ["<h3>Accuracy search</h3>",
           f"<p>Chosen by {_e(sel.chosen_by or sel.mode)}: {_e(sel.chosen_why or acc.why)}. "
           f"{'Ran' if acc.ran else 'Did not run'} in {_num(acc.time_s, '.1f')} s "
           f"({_num(acc.pct_of_build, '.1f')} % of the build; cap {_num(acc.cap_s, '.1f')} s). "
           f"{_e(acc.rule)}; {_e(acc.val_samples)} validation samples, test split {_e(acc.test_split)}.</p>"]
    if not acc.ran:
        return out
    budget = sel.budget_ms if sel.mode == "latency" else report.student.budget_fit.max_macs
    plot = accuracy_pareto_plot(sel, budget)
    if plot:
        out.append(_img(plot, "proxy accuracy vs latency: Pareto front, budget, chosen"))
    rows = [[_e(c.name), _e(c.why), _int(c.params), _int(c.macs), _num(c.latency_ms, ".4f"),
             _e(", ".join(f"{s.val_accuracy:.4f} ({s.steps})" for s in c.scores) or "-"),
             _num(c.step_ms, ".1f"), _e(c.status)] for c in acc.candidates]
    out.append(_table(["finalist", "why", "params", "MACs", "latency ms", "proxy val accuracy (steps)", "step ms",
                       "verdict"], rows))
    return out


def latency_distribution_plot(report: Report) -> str | None:
    """Box plot per artifact from the runner's raw samples (whiskers 1st..99th percentile), p50 marked."""
    rows = [(a, a.latency_ms_detail, np.asarray(a.latency_ms_detail.samples_ms, dtype=float))
            for a in report.artifacts if a.latency_ms_detail is not None and a.latency_ms_detail.samples_ms]
    if not rows:
        return None
    fig = _figure(7.5, 0.9 + 0.55 * len(rows))
    ax = fig.add_subplot()
    box = ax.boxplot([s for _, _, s in rows], orientation="horizontal", whis=(1, 99), showfliers=True,
                     patch_artist=True, flierprops={"markersize": 2, "alpha": 0.4}, medianprops={"color": "black"})
    for patch, (a, _, _) in zip(box["boxes"], rows, strict=True):
        patch.set_facecolor(_colour(a.format))
        patch.set_alpha(0.55 if a.shipped else 0.25)
    labels = [_plain(f"{a.path}{' *' if a.shipped else ''}") + f"\n{len(s)} runs, noise {detail.noise_pct:.1f} %"
              for a, detail, s in rows]
    ax.set_yticks(range(1, len(rows) + 1), labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency per inference, ms (log scale; box: 25-75 %, whiskers: 1-99 %)")
    ax.set_title("Latency distribution per artifact (* = shipped)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return _png(fig)


def int8_divergence_plot(divergence: dict[str, Any], top: int = 15) -> str | None:
    """The layers where plain int8 diverged most (``edgekd.compress.int8_divergence``): weight and activation
    SQNR per layer, worst first, with the threshold under which an output counts as drifting."""
    layers = [la for la in divergence.get("layers") or [] if isinstance(la, dict)][:top]
    if not layers:
        return None
    fig = _figure(7.5, 1.2 + 0.32 * len(layers))
    ax = fig.add_subplot()
    y = np.arange(len(layers))
    for offset, key, label, colour in ((-0.2, "weight_sqnr_db", "weights", "#4c72b0"),
                                       (0.2, "activation_sqnr_db", "activations", "#dd8452")):
        values = [la.get(key) if isinstance(la.get(key), (int, float)) else np.nan for la in layers]
        ax.barh(y + offset, values, height=0.38, label=label, color=colour)
    threshold = divergence.get("threshold_db")
    if isinstance(threshold, (int, float)):
        ax.axvline(threshold, color="#c44e52", linestyle="--", label=f"threshold {threshold:g} dB")
    ax.set_yticks(y, [_plain(f"{la.get('layer')} ({la.get('op_type')})") for la in layers], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("SQNR, dB (median channel; lower = more quantization noise)")
    ax.set_title(_plain(f"Where plain int8 diverges from fp32: {divergence.get('artifact', '?')}, worst first"))
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


def int8_divergence_section(report: Report) -> list[str]:
    """One plot per artifact whose plain int8 broke its contract and was explained (accuracy_aware.int8_divergence)."""
    out = []
    for a in report.artifacts:
        divergence = ((a.model_extra or {}).get("accuracy_aware") or {}).get("int8_divergence")
        b64 = int8_divergence_plot(divergence) if isinstance(divergence, dict) else None
        if b64:
            note = (f"Plain int8 broke the accuracy contract; measured over {_e(divergence.get('samples'))} "
                    f"calibration samples with {_e(divergence.get('tool'))}. First layer whose output fell below "
                    f"the threshold: {_e(divergence.get('first_below_threshold') or 'none')}. "
                    "<code>edgekd explain-int8 RUN</code> ranks every layer.")
            out += [f"<h2>int8 divergence: {_e(a.path)}</h2>", _img(b64, "int8 divergence per layer"),
                    f"<p class=note>{note}</p>"]
    return out


def per_class_accuracy(eval_inputs: str | os.PathLike[str] | None) -> dict[str, dict[str, float]]:
    """Per-class accuracy of the teacher and the PyTorch student, from eval.npz (labels + recorded outputs)."""
    if not eval_inputs or not Path(eval_inputs).is_file():
        return {}
    with np.load(eval_inputs, allow_pickle=False) as npz:
        if "y" not in npz.files:
            return {}
        y = npz["y"]
        out = {}
        for key, name in (("teacher_logits", "teacher"), ("reference_logits", "student")):
            if key in npz.files:
                pred = npz[key].argmax(1)
                out[name] = {str(int(c)): float((pred[y == c] == c).mean()) for c in np.unique(y)}
    return out


def per_class_plot(report: Report, per_class: dict[str, dict[str, float]]) -> str | None:
    """Accuracy change per class vs the teacher, in points: PyTorch student and each shipped artifact."""
    teacher = per_class.get("teacher")
    if not teacher:
        return None
    series = []
    if "student" in per_class:
        series.append(("student (PyTorch fp32)", per_class["student"], "#7f7f7f"))
    for a in report.shipped:
        per_artifact = (a.model_extra or {}).get("per_class_accuracy")
        if per_artifact:
            series.append((_plain(a.path), per_artifact, _colour(a.format)))
    if not series:
        return None
    classes = sorted(teacher, key=int)
    names = report.data.get("classes") or []
    labels = [_plain(names[int(c)] if int(c) < len(names) else c) for c in classes]
    fig = _figure(7.5, 3.8)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    x = np.arange(len(classes))
    for i, (label, acc, color) in enumerate(series):
        delta = [100 * (acc.get(c, np.nan) - teacher[c]) for c in classes]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, delta, width, label=label, color=color, alpha=0.85)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(x, labels, fontsize=8, rotation=0 if len(classes) <= 12 else 60)
    ax.set_xlabel("class")
    ax.set_ylabel("accuracy - teacher's, points")
    ax.set_title("Per-class accuracy change vs the teacher (below 0: worse than the teacher)")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


# --------------------------------------------------------------------------------------------- tables
def _e(value: Any) -> str:
    return html.escape(str(value))


def _int(x: int | None) -> str:
    return "-" if x is None else f"{x:,}"


def _kib(n: int | None) -> str:
    return "-" if n is None else f"{n / 1024:.1f} KiB"


def _table(head: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    out = ['<div class="scroll"><table><thead><tr>', *[f"<th>{_e(h)}</th>" for h in head], "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def models_table(report: Report) -> str:
    """Teacher (per runtime), PyTorch student and every artifact, measured in the same run (cells are escaped)."""
    t, s = report.teacher, report.student
    head = ["model", "format", "precision", "params", "MACs", "size", "accuracy", "agree w/ teacher", "p50 ms",
            "p99 ms", "noise", "peak MB", "speed vs teacher", "shipped"]
    rows, classes = [], []
    for fmt, tf in (t.by_format or {"-": t}).items():
        rows.append([_e(f"teacher ({t.arch})"), _e(fmt), "fp32", _int(t.params), _int(t.macs), _kib(tf.size_bytes),
                     _pct(t.accuracy), "100.00 %", _num(tf.latency_ms.p50), _num(tf.latency_ms.p99), "-",
                     _num(tf.peak_memory_mb, ".1f"), "1.00x", "reference"])
        classes.append("teacher")
    rows.append([_e(f"student ({s.family}, PyTorch)"), "-", "fp32", _int(s.params), _int(s.macs), "-",
                 _pct(s.accuracy), "-", "-", "-", "-", "-", "-", "-"])
    classes.append("student")
    for a in report.artifacts:
        noise = None if a.latency_ms_detail is None else a.latency_ms_detail.noise_pct
        rows.append([f"<code>{_e(a.path)}</code>", _e(a.format), _e(a.precision), _int(a.params), _int(a.macs),
                     _kib(a.size_bytes), _pct(a.accuracy), _pct(a.agreement_with_teacher), _num(a.latency_ms.p50),
                     _num(a.latency_ms.p99), _num(noise, ".1f") + " %", _num(a.peak_memory_mb, ".1f"),
                     "-" if a.speed_vs_teacher is None else f"{a.speed_vs_teacher:.2f}x",
                     "<b>yes</b>" if a.shipped else "no"])
        classes.append("shipped" if a.shipped else "")
    return _table(head, rows, classes)


def device_table(report: Report) -> str:
    if not report.device_results:
        return ("<p class=note>No device results yet: run <code>edgekd bench RUN_DIR --remote USER@HOST</code> "
                "to measure the shipped artifacts on the device itself.</p>")
    head = ["device", "where", "machine", "target device?", "artifact", "runtime", "p50 ms", "p95 ms", "p99 ms",
            "noise", "accuracy", "peak MB", "measured"]
    rows = []
    for d in report.device_results:
        m, extra = d.measured_on, d.measured_on.model_extra or {}
        machine = f"{m.cpu or '?'} ({m.arch}, {'?' if m.cores is None else m.cores} cores)"
        where = extra.get("where") or "device"  # device, host, or emulated (whose timing is QEMU's, never judged)
        for a in d.artifacts:
            lat, more = a.latency_ms, a.model_extra or {}
            version = str(more.get("runtime_version") or "").split("-")[0]  # OpenVINO's build suffix is long
            rows.append([_e(d.remote), f"<b>{where}</b>" if where == "emulated" else _e(where), _e(machine),
                         "yes" if m.is_target_device else "<b>no</b>",
                         f"<code>{_e(a.path)}</code>", _e(f"{a.runtime} {version}"),
                         _num(lat.p50), _num(lat.p95), _num(lat.p99), _num(more.get("noise_pct"), ".1f") + " %",
                         _pct(a.accuracy), _num(a.peak_memory_mb, ".1f"), _e(d.measured_at or "-")])
    return _table(head, rows)


def gate_section(report: Report) -> str:
    gate = report.gate
    if gate is None:
        return "<p>No gate result in this report.</p>"
    verdict = "PASSED" if gate.passed else "FAILED"
    parts = [f'<p class="verdict {verdict.lower()}">Gate {verdict}</p>']
    if gate.violations:
        parts.append("<ul>" + "".join(f"<li>{_e(v)}</li>" for v in gate.violations) + "</ul>")
    if gate.checks:
        rows = [[_e(c.name), _e(c.artifact or "(student)"),
                 "-" if c.measured is None else _e(f"{c.measured:.6g} {c.unit}"),
                 _e(f"{c.comparison} {_num(c.budget, '.6g')}"), _e(c.status)] for c in gate.checks]
        parts.append(_table(["budget", "artifact", "measured", "budget", "status"], rows,
                            [c.status if c.status != "pass" else "" for c in gate.checks]))
    return "".join(parts)


# --------------------------------------------------------------------------------------------- page
_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;margin:24px auto;max-width:1180px;
color:#1d1d1f;padding:0 16px}h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;margin-top:28px;
border-bottom:1px solid #ddd;padding-bottom:4px}table{border-collapse:collapse;font-size:12px;margin:8px 0;width:100%}
th,td{border:1px solid #ddd;padding:3px 5px;text-align:right;white-space:nowrap}th{background:#f3f3f3;
white-space:normal;vertical-align:bottom}.scroll{overflow-x:auto}
td:first-child,th:first-child{text-align:left}tr.shipped{background:#eef7ee}tr.teacher{background:#f6f6fb}
tr.fail{background:#fde8e8}tr.unverified{background:#fff6dd}.note{color:#555}.warn{background:#fff6dd;
border:1px solid #e8c95a;padding:8px 10px;border-radius:4px}.verdict{font-weight:bold;font-size:1.1em}
.passed{color:#1a7f37}.failed{color:#b42318}img{max-width:100%;height:auto;display:block;margin:8px 0}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:16px}code{font-size:12px}
"""


def render_html(report: Report | dict[str, Any], eval_inputs: str | os.PathLike[str] | None = None) -> str:
    """The whole page as a string (all images inline), from the validated report (``schema.as_report``)."""
    report = as_report(report)
    m = report.measured_on
    on_target = m.is_target_device
    where = (f"{_e(m.cpu or '?')} ({_e(m.arch)}, {_e(m.cores)} cores), "
             f"{_e(m.threads)} thread(s), batch 1, runner.py in a fresh process without torch")
    identity = (m.model_extra or {}).get("identity") or {}
    rule = (f" (rule: {_e(identity.get('rule'))}: {_e('; '.join(identity.get('reasons', [])))})"
            if identity else "")
    banner = (f"<p>Measured on the target device{rule}.</p>" if on_target else
              f"<p class=warn>These latencies were measured on a host that is <b>not</b> the target device{rule}; "
              "device budgets are unverified here. Measure on the device with "
              "<code>edgekd bench RUN_DIR --remote USER@HOST</code>.</p>")
    banner += ("<p>Peak memory is the model's: peak resident memory while running over the runtime's own "
               "baseline (imports done, nothing loaded).</p>")
    s = report.student
    build = "" if report.build_time_s is None else f", build {_e(report.build_time_s)} s"
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>edgekd report: {_e(report.target)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>edgekd report: {_e(report.target)}</h1>",
        f"<p class=note>edgekd {_e(report.edgekd_version)}, created {_e(report.created)}{build}. "
        f"Data: {_e(report.data.get('name', '?'))}.</p>",
        f"<p>Measured on {'the target device' if on_target else 'a host that is NOT the target device'}: "
        f"{where}.</p>",
        banner,
        "<h2>Teacher, student and artifacts</h2>",
        models_table(report),
        "<p class=note>Speed vs teacher compares with the teacher run in the same runtime and threads. "
        f"Student: {_e(s.family)} {_e(s.config)}; KD gain over training alone: "
        f"{'-' if s.kd_gain is None else format(100 * s.kd_gain, '+.2f') + ' points'}.</p>",
        *_charts(report, per_class_accuracy(eval_inputs)),
        *selection_section(report),
        *int8_divergence_section(report),
        "<h2>Measured on devices</h2>",
        device_table(report),
        device_detail_html(dump(report)),
        "<h2>Precision choice</h2>",
        "<ul>" + "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in report.precision_choice.items()) + "</ul>"
        if report.precision_choice else "<p class=note>-</p>",
        "<h2>Gate</h2>",
        gate_section(report),
        "</body></html>",
    ]) + "\n"


def _charts(report: Report, per_class: dict[str, dict[str, float]]) -> list[str]:
    """The three plots, each with its heading, or a note saying which data it lacks."""
    out = ["<h2>Accuracy vs latency</h2>", _img(accuracy_latency_plot(report), "Accuracy vs latency"),
           "<h2>Latency distribution</h2>"]
    dist = latency_distribution_plot(report)
    out.append(_img(dist, "Latency distribution") if dist else
               "<p class=note>No raw latency samples in this report (latency_ms_detail.samples_ms).</p>")
    out.append("<h2>Per-class accuracy vs the teacher</h2>")
    pc = per_class_plot(report, per_class)
    out.append(_img(pc, "Per-class accuracy vs the teacher") if pc else
               "<p class=note>No per-class data: eval.npz with y and teacher_logits was not found beside the "
               "report.</p>")
    return out


def write_html(report: Report | dict[str, Any], path: str | os.PathLike[str],
               eval_inputs: str | os.PathLike[str] | None = None) -> Path:
    """Write report.html atomically; per-class accuracy comes from ``eval_inputs`` (default: eval.npz beside it).
    A run's three report files are written together by ``publish.publish``."""
    path = Path(path)
    if eval_inputs is None:
        eval_inputs = path.parent / "eval.npz"
    return write_text(path, render_html(report, eval_inputs))
