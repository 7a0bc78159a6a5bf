"""Training progress that a person can watch and a CI log can hold.

Why not a plain tqdm bar: an epoch of the default teacher on 60,000 images takes minutes, so a per-epoch bar sits
still for minutes; and in a CI log (not a TTY) tqdm either prints nothing useful or one line per refresh. So: on a
TTY, a bar over the samples of the current epoch (rewritten in place); elsewhere, at most ``lines_per_epoch`` plain
lines per epoch (at even fractions of it) plus one summary line when the epoch ends.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm.auto import tqdm


class Progress:
    """``start_epoch`` -> ``update(done, total)`` per batch -> ``end_epoch(row, best)``; ``close`` at the end."""

    def __init__(self, label: str, epochs: int, enabled: bool = True, stream: TextIO | None = None,
                 lines_per_epoch: int = 2, tty: bool | None = None) -> None:
        self.label, self.epochs, self.enabled = label, epochs, enabled
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.lines_per_epoch = max(0, lines_per_epoch)
        self.epoch, self._t0, self._next, self._bar = 0, 0.0, 1.0, None

    def start_epoch(self, epoch: int, total: int) -> None:
        """``epoch`` counts from 1; ``total``: samples this epoch."""
        self.epoch, self._t0 = epoch, time.perf_counter()
        self._next = 1.0 / (self.lines_per_epoch + 1) if self.lines_per_epoch else 2.0
        if self.enabled and self.tty:
            self._bar = tqdm(total=total, desc=f"{self.label} {epoch}/{self.epochs}", unit="sample", leave=False,
                             file=self.stream)

    def update(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            return
        if total and done / total >= self._next and done < total:
            rate = done / max(time.perf_counter() - self._t0, 1e-9)
            self._write(f"{self.label}: epoch {self.epoch}/{self.epochs} {done}/{total} samples "
                        f"({rate:.0f}/s)")
            while self._next <= done / total:
                self._next += 1.0 / (self.lines_per_epoch + 1)

    def end_epoch(self, row: dict, best: float) -> None:
        self._close_bar()
        if self.enabled:
            self._write(f"{self.label}: epoch {row['epoch']}/{self.epochs} loss {row['loss']:.4f} "
                        f"val {row['val_accuracy']:.4f} (best {best:.4f}) in {row.get('epoch_time_s', 0.0):.1f}s")

    def close(self) -> None:
        self._close_bar()

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _write(self, line: str) -> None:
        print(line, file=self.stream, flush=True)
