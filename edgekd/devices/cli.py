"""``edgekd bench`` flags for the devices' own tools: ``--adb SERIAL``, ``--runtime tensorrt``,
``--benchmark-tool PATH``; ``edgekd.cli.bench`` registers them and hands such a run here."""

from __future__ import annotations

import sys
from pathlib import Path

from edgekd.bench import SshConfig
from edgekd.devices.android import AdbOptions, bench_android
from edgekd.devices.tensorrt import bench_tensorrt
from edgekd.errors import EdgekdError
from edgekd.io import write_json

RUNTIMES = ("runner", "tensorrt")


def register_device_flags(parser) -> None:
    g = parser.add_argument_group("devices through their own tools (docs/devices.md)")
    g.add_argument("--adb", metavar="SERIAL",
                   help="measure the shipped TFLite artifact on this Android device over adb with TFLite's "
                        "benchmark_model and the target's delegate (nnapi / gpu / xnnpack)")
    g.add_argument("--runtime", choices=RUNTIMES, default="runner",
                   help="with --remote: 'tensorrt' builds and times the TensorRT engine on the device with trtexec "
                        "(Jetson) instead of running runner.py on its CPU")
    g.add_argument("--benchmark-tool", metavar="PATH",
                   help="--adb: benchmark_model for Android (a file here, pushed; or its path on the device, default "
                        "/data/local/tmp/benchmark_model); --runtime tensorrt: trtexec's path on the device (default "
                        "/usr/src/tensorrt/bin/trtexec)")
    g.add_argument("--inference-diff", metavar="PATH",
                   help="--adb: TFLite's inference_diff for Android (a file here, pushed; or its path on the device): "
                        "the delegate's outputs compared with the CPU reference kernels on the phone")


def wants_device_tool(args) -> bool:
    return any(v is not None for v in (args.adb, args.benchmark_tool, args.inference_diff)) or args.runtime != "runner"


def _check_combination(args) -> None:
    if getattr(args, "emulate", None):
        raise EdgekdError("--emulate cannot be combined with --adb, --runtime tensorrt or a device tool",
                          "emulate and measure on the device in two runs of `edgekd bench`")
    if args.inputs:
        raise EdgekdError("--inputs cannot be combined with --adb or --runtime tensorrt",
                          "the device tools time the run's shipped artifacts; accuracy is the build's")
    if not Path(args.artifact).is_dir():
        raise EdgekdError(f"--adb / --runtime tensorrt need a run directory, got {args.artifact}",
                          "pass the directory `edgekd build` wrote")
    if args.adb is None and args.runtime == "runner":
        raise EdgekdError("--benchmark-tool and --inference-diff name a device tool: they go with --adb SERIAL (or "
                          "--benchmark-tool with --runtime tensorrt)", "add --adb SERIAL or --runtime tensorrt")
    if args.inference_diff and args.adb is None:
        raise EdgekdError("--inference-diff runs on an Android device", "add --adb SERIAL")
    if args.adb is not None and (args.remote or args.runtime != "runner"):
        raise EdgekdError("--adb measures one Android device; it cannot be combined with --remote or --runtime",
                          "run `edgekd bench RUN --adb SERIAL` and `edgekd bench RUN --remote ...` separately")
    if args.adb is None and not args.remote:
        raise EdgekdError("--runtime tensorrt needs the device: --remote USER@HOST[:PORT]",
                          "e.g. edgekd bench runs/jetson-orin-nano --remote nvidia@jetson.local --runtime tensorrt")


def cmd_bench_device(args) -> int:
    _check_combination(args)
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.adb is not None:
        opts = AdbOptions(args.adb, args.benchmark_tool, args.inference_diff, args.runs or 200,
                          args.warmup if args.warmup is not None else 20, args.threads, declared=args.as_target)
        entries = [bench_android(args.artifact, opts, say)]
        failed: list[dict] = []
    else:
        ssh = SshConfig(identity=args.identity, options=args.ssh_option or [], connect_timeout=args.connect_timeout,
                        keep_remote=args.keep_remote)
        done = bench_tensorrt(args.artifact, args.remote, ssh, args.benchmark_tool, args.runs, args.as_target, say)
        entries = [r.entry for r in done if r.ok]
        failed = [{"remote": r.remote, "error": r.error} for r in done if not r.ok]
    for entry in entries:
        for a in entry["artifacts"]:
            lat = a["latency_ms"]
            print(f"{entry['remote']:<28} {a['path']:<20} {a['runtime']:<22} p50 {lat['p50']:.4f} ms  "
                  f"p95 {lat['p95']:.4f} ms  noise {a.get('noise_pct') or 0:.1f} %")
    if args.json:
        write_json(args.json, {"devices": entries, "failed": failed})
    if not entries:
        raise EdgekdError(f"all {len(failed)} device(s) failed; report.json was not changed",
                          "see each device's message above")
    if failed and args.require_all:
        raise EdgekdError(f"{len(failed)} device(s) failed (--require-all)", "see each device's message above")
    return 0
