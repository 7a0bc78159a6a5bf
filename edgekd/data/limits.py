"""How much a data file may make edgekd allocate, read or extract, and how a user raises it.

Every reader checks the sizes a file *declares* (headers, zip directories, image headers) against these limits
before it allocates, so a hostile or broken file ends in one clear error instead of a ``MemoryError``, a swapping
machine or a full disk. Each limit has an environment variable; docs/data.md lists them.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from edgekd.errors import EdgekdError

MEMORY_FRACTION = 0.4  # of available memory: the loader briefly holds raw + float32 copies; training needs the rest
DISK_FRACTION = 0.5  # of the free space where archives are extracted
FALLBACK_MEMORY = 4 << 30  # when neither /proc/meminfo nor sysconf answers

ENV_MAX_BYTES = "EDGEKD_DATA_MAX_BYTES"
ENV_MAX_CLASSES = "EDGEKD_DATA_MAX_CLASSES"
ENV_MAX_FILES = "EDGEKD_DATA_MAX_FILES"
ENV_MAX_PIXELS = "EDGEKD_DATA_MAX_PIXELS"
ENV_MAX_EXTRACT = "EDGEKD_DATA_MAX_EXTRACT_BYTES"

DEFAULT_MAX_CLASSES = 10_000
DEFAULT_MAX_FILES = 2_000_000
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's own decompression-bomb threshold (~ a 9,459 x 9,459 image)

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_count(text: str, env: str) -> int:
    """``"8G"``, ``"500M"``, ``"12000"`` -> an int > 0; anything else is the user's error, named."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    value = int(float(match.group(1)) * _UNITS[match.group(2)]) if match else 0
    if value <= 0:
        raise EdgekdError(f"{env}={text!r} is not a positive size or count", f"e.g. {env}=8G or {env}=100000")
    return value


def available_memory() -> int:
    """Bytes this process can still use: MemAvailable, capped by a cgroup (container) limit when one is set."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            available = FALLBACK_MEMORY
    try:
        cgroup = Path("/sys/fs/cgroup")
        limit, used = (cgroup / "memory.max").read_text().strip(), (cgroup / "memory.current").read_text().strip()
        if limit.isdigit():
            available = min(available, int(limit) - int(used))
    except (OSError, ValueError):
        pass
    return max(available, 1 << 20)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True)
class DataLimits:
    """The caps one ``load_dataset`` call works under (read once from the environment)."""

    max_bytes: int
    max_bytes_source: str
    max_classes: int = DEFAULT_MAX_CLASSES
    max_files: int = DEFAULT_MAX_FILES
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_extract_bytes: int | None = None  # None: DISK_FRACTION of the free space where it extracts

    @classmethod
    def from_env(cls) -> DataLimits:
        env = os.environ

        def read(name: str, default: int) -> int:
            return parse_count(env[name], name) if env.get(name) else default

        if env.get(ENV_MAX_BYTES):
            max_bytes, source = parse_count(env[ENV_MAX_BYTES], ENV_MAX_BYTES), f"set by {ENV_MAX_BYTES}"
        else:
            max_bytes, source = int(MEMORY_FRACTION * available_memory()), f"{MEMORY_FRACTION:.0%} of available memory"
        extract = parse_count(env[ENV_MAX_EXTRACT], ENV_MAX_EXTRACT) if env.get(ENV_MAX_EXTRACT) else None
        return cls(max_bytes, source, read(ENV_MAX_CLASSES, DEFAULT_MAX_CLASSES),
                   read(ENV_MAX_FILES, DEFAULT_MAX_FILES), read(ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS), extract)

    def check_bytes(self, nbytes: int, what: str, fix: str) -> None:
        """Refuse to allocate ``nbytes`` for ``what`` above the memory limit."""
        if nbytes > self.max_bytes:
            raise EdgekdError(
                f"{what} needs {human_bytes(nbytes)}, over the data memory limit of {human_bytes(self.max_bytes)} "
                f"({self.max_bytes_source})",
                f"{fix}; or raise the limit with {ENV_MAX_BYTES} (e.g. {ENV_MAX_BYTES}=16G) if the machine has room")

    def check_classes(self, count: int, what: str) -> None:
        if count > self.max_classes:
            raise EdgekdError(
                f"{what} has {count} classes, over the cap of {self.max_classes}",
                f"check the labels (an id or a continuous value?), or raise {ENV_MAX_CLASSES}")

    def check_files(self, count: int, what: str) -> None:
        if count > self.max_files:
            raise EdgekdError(f"{what} holds more than {self.max_files} files",
                              f"use a smaller set, or raise {ENV_MAX_FILES}")

    def extract_budget(self, where: Path) -> tuple[int, str]:
        """Bytes an archive may unpack to under ``where`` (an existing directory), and where that number comes from."""
        if self.max_extract_bytes is not None:
            return self.max_extract_bytes, f"set by {ENV_MAX_EXTRACT}"
        free = shutil.disk_usage(where).free
        return int(DISK_FRACTION * free), f"{DISK_FRACTION:.0%} of the free disk space at {where}"
