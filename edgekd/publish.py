"""Publish a run's report: report.json, report.md and report.html, written together from one ``schema.Report``.

``edgekd build`` (``api.build``) and ``edgekd bench`` (``bench.refresh_report``) both end here, so the three files
can never disagree about the build, the device results or the gate, and there is one place that writes them.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from edgekd.io import dumps
from edgekd.render_html import render_html
from edgekd.render_md import render_markdown
from edgekd.schema import Report

REPORT_FILES = ("report.json", "report.md", "report.html")


def _staged(path: Path, text: str) -> Path:
    """``text`` in a hidden temporary file beside ``path`` (``mkstemp``: private, 0600, as ``io.atomic_write``
    makes every file of a run), flushed to disk: only a rename is left to do."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(tmp)


def publish(report: Report, run_dir: str | os.PathLike[str]) -> Report:
    """Validate ``report`` again (a writer bug fails here, never in the gate that reads the file), render all three
    files in memory, then rename each into place: a failure while validating or rendering leaves the run's old
    files untouched, never one new file beside two old ones."""
    checked = Report.model_validate_json(dumps(report.model_dump(mode="json")))
    run_dir = Path(run_dir)
    texts = {"report.json": dumps(checked.model_dump(mode="json"), indent=2) + "\n",
             "report.md": render_markdown(checked),
             "report.html": render_html(checked, run_dir / checked.eval_inputs.path)}
    staged: dict[str, Path] = {}
    try:
        for name in REPORT_FILES:
            staged[name] = _staged(run_dir / name, texts[name])
        for name in REPORT_FILES:
            os.replace(staged.pop(name), run_dir / name)
    finally:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
    return checked
