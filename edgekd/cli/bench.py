"""``edgekd bench``: re-measure a run's artifacts here, or on devices over SSH, and refresh its report."""

from __future__ import annotations

from pathlib import Path

from edgekd.bench import SshConfig, _merge_and_refresh, bench_remote, merge_local, report_target, run_local
from edgekd.bundle import load_run
from edgekd.counts import check_counts
from edgekd.devices.cli import cmd_bench_device, register_device_flags, wants_device_tool
from edgekd.emulate import bench_emulated, emulated_entry
from edgekd.errors import EdgekdError
from edgekd.formats import artifact_suffixes
from edgekd.io import write_json
from edgekd.schema import read


def cmd_bench(args) -> int:
    check_counts({"--runs": args.runs, "--warmup": args.warmup, "--threads": args.threads,
                  "--remote": len(args.remote) if args.remote else None, "--connect-timeout": args.connect_timeout})
    if wants_device_tool(args):
        return cmd_bench_device(args)
    if args.emulate:
        return _cmd_bench_emulate(args)
    if args.remote:
        return _cmd_bench_remote(args)
    path = Path(args.artifact)
    if path.is_dir() and (path / "report.json").is_file():
        load_run(path)  # report.json validated, and its sha256 values pinned: a changed run is refused here
    if path.is_dir():
        manifest = read("manifest", path / "manifest.json", f"{path}/manifest.json",
                        "pass a run directory written by this edgekd (`edgekd build`)")
        artifacts = [path / a.path for a in manifest.artifacts]
        inputs = Path(args.inputs) if args.inputs else path / manifest.eval_inputs.path
    else:
        if not path.is_file():
            raise EdgekdError(f"artifact not found: {path}", f"pass a run directory or an {artifact_suffixes()} file")
        artifacts = [path]
        inputs = Path(args.inputs) if args.inputs else path.parent / "eval.npz"
    threads = args.threads or 1
    results = [run_local(a, inputs, args.runs or 200, args.warmup if args.warmup is not None else 20, threads)
               for a in artifacts]
    for r in results:
        lat = r["latency_ms"]
        print(f"{r['artifact']:<24} {r['runtime']['name']:<12} p50 {lat['p50']:.4f} ms  p99 {lat['p99']:.4f} ms  "
              f"accuracy {r.get('accuracy', float('nan')):.4f}  "
              f"model peak {r.get('peak_memory_mb', float('nan')):.1f} MB")
    if args.json:
        write_json(args.json, {"results": results})
    if path.is_dir() and (path / "report.json").is_file():
        if args.inputs:
            print("report.json not updated: --inputs are not the run's eval inputs")
        else:
            merge_local(path, results, args.as_target)
    return 0


def _cmd_bench_remote(args) -> int:
    if args.inputs:
        raise EdgekdError("--inputs cannot be combined with --remote", "the bundle carries the run's eval.npz")
    if not Path(args.artifact).is_dir():
        raise EdgekdError(f"--remote needs a run directory, got {args.artifact}",
                          "pass the directory `edgekd build` wrote (it is bundled with its shipped artifacts)")
    ssh = SshConfig(identity=args.identity, options=args.ssh_option or [], python=args.remote_python,
                    connect_timeout=args.connect_timeout, keep_remote=args.keep_remote)
    done = bench_remote(args.artifact, args.remote, ssh, runs=args.runs, warmup=args.warmup, threads=args.threads,
                        declared=args.as_target)
    ok = [r for r in done if r.ok]
    for r in ok:
        for a in r.entry["artifacts"]:
            lat = a["latency_ms"]
            print(f"{r.remote:<28} {a['path']:<20} {a['runtime']:<12} p50 {lat['p50']:.4f} ms  "
                  f"p99 {lat['p99']:.4f} ms  noise {a.get('noise_pct') or 0:.1f} %  "
                  f"accuracy {a.get('accuracy', float('nan')):.4f}")
    if ok:
        print(f"merged {len(ok)} device result(s) into {Path(args.artifact) / 'report.json'} (device_results[]) and "
              "refreshed its gate, report.md and report.html")
    if args.json:
        write_json(args.json, {"devices": [r.entry for r in ok],
                               "failed": [{"remote": r.remote, "error": r.error} for r in done if not r.ok]})
    failed = [r for r in done if not r.ok]
    if not ok:
        raise EdgekdError(f"all {len(done)} device(s) failed; report.json was not changed",
                          "see each device's message above")
    if failed and args.require_all:
        raise EdgekdError(f"{len(failed)} of {len(done)} device(s) failed (--require-all)",
                          "see each device's message above; the others' results were merged")
    return 0


def _cmd_bench_emulate(args) -> int:
    """--emulate ARCH: the shipped artifacts on the target's ARM core under QEMU, compared with this host."""
    clash = [flag for flag, given in (("--remote", args.remote), ("--inputs", args.inputs),
                                      ("--as-target", args.as_target)) if given]
    if clash:
        raise EdgekdError(f"--emulate cannot be combined with {', '.join(clash)}",
                          "an emulated run uses the run's own eval.npz and is never the target device")
    run_dir = Path(args.artifact)
    if not (run_dir.is_dir() and (run_dir / "report.json").is_file()):
        raise EdgekdError(f"--emulate needs a run directory, got {args.artifact}",
                          "pass the directory `edgekd build` wrote (its shipped artifacts are emulated)")
    say = lambda m: print(m, flush=True)  # noqa: E731
    run = bench_emulated(run_dir, args.emulate, args.threads, say)
    for path, c in run.comparison.items():
        print(f"{path:<24} accuracy host {c['accuracy_host']:.4f}  emulated {c['accuracy_emulated']:.4f}  top-1 "
              f"agreement {c['top1_agreement']:.4f}  max |logit diff| {c['max_abs_logit_diff']:.3g}  "
              f"({run.emulation['core']}, timing emulated: not judged)")
    report, _ = load_run(run_dir)
    entry = emulated_entry(run, report_target(report))
    if args.json:
        write_json(args.json, entry)
    _merge_and_refresh(run_dir, report, [entry], say)
    return 0


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark a run directory or one artifact with the standalone runner, "
                                     "locally or on devices over SSH (--remote)")
    p.add_argument("artifact", help="run directory or artifact file (--remote: a run directory)")
    p.add_argument("--inputs", help="EVAL.npz (default: the run's eval.npz)")
    p.add_argument("--runs", type=int, help="minimum timed runs (default 200)")
    p.add_argument("--warmup", type=int, help="minimum warm-up runs (default 20)")
    p.add_argument("--threads", type=int, help="default: 1 locally, the target's runtime.threads on a device")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--as-target", action="store_true",
                   help="declare that the machine(s) measured are the target device, whatever the target file's "
                        "identity says (recorded in report.json; never for accelerator targets: TensorRT, NNAPI)")
    p.add_argument("--emulate", choices=["aarch64"], metavar="ARCH",
                   help="run the shipped artifacts on the target's own ARM core under QEMU user-mode emulation "
                        "(aarch64) and compare them with this host: accuracy, top-1 agreement, logit difference; "
                        "timing under emulation never judges a budget (see docs/devices.md)")
    g = p.add_argument_group("devices over SSH (system ssh/scp; several --remote run in parallel)")
    g.add_argument("--remote", action="append", metavar="USER@HOST[:PORT]",
                   help="benchmark the shipped artifacts on this device; repeat for a device farm")
    g.add_argument("--identity", metavar="KEY", help="private key for ssh/scp (-i)")
    g.add_argument("--ssh-option", action="append", metavar="OPT",
                   help="extra ssh/scp -o option, e.g. UserKnownHostsFile=/path (repeatable)")
    g.add_argument("--remote-python", default="python3", help="the device's Python (default python3)")
    g.add_argument("--connect-timeout", type=int, default=15, help="seconds to wait for a device to answer")
    g.add_argument("--keep-remote", action="store_true", help="leave the bundle on the device (for debugging)")
    g.add_argument("--require-all", action="store_true",
                   help="exit 2 when any device fails (default: only when all fail; the others are merged)")
    register_device_flags(p)
    p.set_defaults(func=cmd_bench)
