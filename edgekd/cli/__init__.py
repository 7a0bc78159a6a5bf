"""``edgekd`` command line: a thin layer over the library, one module per command.

Exit codes: 0 ok; 1 a gate failed (build, gate); 2 bad input (one message naming the problem and the fix; nothing
half-written); 3 an internal error (a bug: one line on stderr and a log file with the traceback; ``--debug``
prints it); 130 interrupted; 143 terminated (SIGTERM). Staging directories are removed on every exit path.

Under torchrun (``torchrun ... -m edgekd build``) each rank runs this, and every rank exits with rank 0's code:
rank 0 says what went wrong once; another rank speaks only for a failure of its own, naming its rank.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import platform
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from edgekd import __version__
from edgekd.cli import bench, build, bundle, explain, gate, targets
from edgekd.distributed import MainFailed, lost_peer, session, under_torchrun
from edgekd.errors import EdgekdError
from edgekd.formats import version_distributions
from edgekd.stages import context as stage_context  # read at call time: tests point the cache elsewhere

INTERNAL_ERROR = 3


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edgekd", description=__doc__)
    parser.add_argument("--version", action=_VersionAction, nargs=0,
                        help="show edgekd's version and the installed runtimes' versions, then exit")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an internal error")
    sub = parser.add_subparsers(dest="command", required=True)

    for command in (targets, build, bench, gate, bundle, explain):
        command.register(sub)
    return parser


# The packages whose versions a result depends on (distribution name, what it is), for ``edgekd --version``:
# torch and each format's (its registry row's ``distributions``).
RUNTIME_DISTRIBUTIONS = tuple(version_distributions())


def version_text() -> str:
    """edgekd's version and each runtime's, read from installed metadata: nothing heavy is imported."""
    lines = [f"edgekd {__version__} (Python {platform.python_version()})"]
    for dist, role in RUNTIME_DISTRIBUTIONS:
        try:
            installed = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        lines.append(f"  {dist:<18} {installed:<14} {role}")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    """Like argparse's ``version`` action, but the metadata is read only when ``--version`` is asked for."""

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so every ``finally`` (staging directories, locks) runs."""

    exit_code = 143


def _on_sigterm(signum, frame):  # noqa: ARG001 - signal handler signature
    raise Terminated()


def _log_internal_error(exc: BaseException) -> Path:
    """Write the traceback where the user can find it (the cache's logs/, else the temp dir)."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    for folder in (stage_context.DEFAULT_CACHE / "logs", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"edgekd-error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
            path.write_text(f"edgekd {' '.join(sys.argv[1:])}\n\n{text}", encoding="utf-8")
            return path
        except OSError:
            continue
    return Path("(could not write a log)")


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _on_sigterm) if _main_thread() else None
    rank = _rank_note(args)
    try:
        with _session(args):
            return args.func(args)
    except EdgekdError as exc:
        print(f"edgekd: error{rank}: {exc.problem}", file=sys.stderr)
        if exc.fix:
            print(f"  fix: {exc.fix}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Terminated) as exc:
        code = 130 if isinstance(exc, KeyboardInterrupt) else Terminated.exit_code
        if not rank:  # under torchrun the others were stopped with rank 0: it speaks for them
            stopped = "interrupted" if code == 130 else "terminated"
            under = _rank_note(args, quiet_rank=None) != ""  # a torchrun build
            print(f"edgekd: {stopped}; nothing was written to the run directory"
                  + (" (torchrun stops every rank when one fails: a failed rank said why above)" if under else ""),
                  file=sys.stderr)
        return code
    except Exception as exc:  # noqa: BLE001 - a bug, not bad input: its own exit code and a log
        if isinstance(exc, MainFailed):  # rank 0 failed and said why; this rank exits with its code
            return exc.exit_code
        job = _rank_note(args, quiet_rank=None)  # " (rank N of W)" on every rank of a torchrun build
        if job and lost_peer(exc):
            print(f"edgekd: stopped{job}: another rank of this torchrun job failed or went away (its own message "
                  f"says why): {str(exc).splitlines()[0][:200]}", file=sys.stderr)
            return INTERNAL_ERROR
        log = _log_internal_error(exc)
        if args.debug:
            traceback.print_exc()
        print(f"edgekd: internal error{rank}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              f"(a bug in edgekd or a library, not your input); traceback in {log}; rerun with --debug to print it",
              file=sys.stderr)
        return INTERNAL_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _session(args: argparse.Namespace):
    """``edgekd build`` under torchrun joins the job's process group (``edgekd.distributed``); else nothing."""
    return session() if args.command == "build" and under_torchrun() else contextlib.nullcontext()


def _rank_note(args: argparse.Namespace, quiet_rank: int | None = 0) -> str:
    """' (rank N of W)' on a torchrun build's ranks (but ``quiet_rank``: rank 0 speaks for the job)."""
    if args.command != "build" or not under_torchrun() or os.environ["RANK"] == str(quiet_rank):
        return ""
    return f" (rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']})"


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


if __name__ == "__main__":
    sys.exit(main())
