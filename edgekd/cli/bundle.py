"""``edgekd bundle``: what a device needs to benchmark the shipped artifacts, as a directory and a tarball."""

from __future__ import annotations

from edgekd.bundle import make_bundle


def cmd_bundle(args) -> int:
    bundle = make_bundle(args.run_dir, args.out, with_teacher=args.with_teacher, threads=args.threads)
    print(f"wrote {bundle.directory}/ and {bundle.tarball} ({len(bundle.artifacts)} artifact(s): "
          f"{', '.join(bundle.artifacts)})")
    print(f"on the device: tar xzf {bundle.tarball.name} && cd {bundle.directory.name} && "
          f"pip install -r requirements-device.txt && {bundle.command}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("bundle", help="package the shipped artifacts + runner.py + eval inputs for a device")
    p.add_argument("run_dir", help="run directory written by `edgekd build`")
    p.add_argument("--out", help="bundle directory (default RUN_DIR/bundle-<target>); OUT.tar.gz is written beside it")
    p.add_argument("--with-teacher", action="store_true",
                   help="also bundle the fp32 teacher in the same formats (device speed vs teacher)")
    p.add_argument("--threads", type=int, help="threads in the README command (default: the target's)")
    p.set_defaults(func=cmd_bundle)
