"""Kept for old scripts: ``torchrun ... -m edgekd.distill.ddp_entry ARGS`` is ``torchrun ... -m edgekd build ARGS``.

The whole build runs data-parallel under torchrun (``edgekd/distributed.py``; docs/training.md, "Many GPUs or
machines"), so this entry no longer has a training path of its own.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    from edgekd.cli import main as cli_main

    return cli_main(["build", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
