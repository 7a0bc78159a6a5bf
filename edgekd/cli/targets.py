"""``edgekd targets list|show``: the shipped and search-path target profiles."""

from __future__ import annotations

import argparse

from edgekd.errors import EdgekdError
from edgekd.targets import SHIPPED, available_targets, describe_target, load_target


def cmd_targets(args: argparse.Namespace) -> int:
    if args.action == "list":
        invalid = 0
        for name, source in available_targets().items():
            where = "shipped" if source.origin == SHIPPED else f"{source.origin}" + (
                " (overrides shipped)" if source.overrides_shipped else "")
            try:
                t = load_target(source.file)
            except EdgekdError as exc:
                invalid += 1
                print(f"{name:<18} INVALID: {exc.problem}  [{where}]")
                continue
            formats, precisions = ", ".join(t.runtime.formats), "/".join(t.runtime.precisions)
            print(f"{name:<18} {formats:<16} {precisions:<10} {t.description}  [{where}]")
        return 2 if invalid else 0
    if not args.name:
        raise EdgekdError("`edgekd targets show` needs a target name or path", "e.g. edgekd targets show rpi4")
    print(describe_target(load_target(args.name)), end="")
    return 0


def register(sub) -> None:
    p = sub.add_parser("targets", help="list or show target profiles")
    p.add_argument("action", choices=["list", "show"])
    p.add_argument("name", nargs="?", help="target name or YAML path (for show)")
    p.set_defaults(func=cmd_targets)
