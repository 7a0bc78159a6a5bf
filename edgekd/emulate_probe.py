"""Save each artifact's logits on a bundle's evaluation inputs, loaded and checked exactly as runner.py does.

Copied beside runner.py into a bundle and run twice, by this host's Python and by the emulated aarch64 one, so that
the same bytes through the same loading code give two sets of logits to compare (``edgekd.emulate``). Like the
runner it imports only numpy and the runtimes (and the bundle's runner.py), never edgekd or torch.

    python emulate_probe.py OUT.npz ARTIFACT [ARTIFACT ...] --inputs eval.npz --threads N
"""

import argparse
import sys

import numpy as np
import runner


def logits_of(artifact, data, threads):
    """The artifact's float32 logits on all of ``data["x"]``, after the runner's sha256 check of its files."""
    entry, contents = runner.verify_artifact(artifact)
    session = runner.load_session(artifact, threads, (entry or {}).get("precision"), contents)
    return np.asarray(session.run_batched(data["x"]), dtype=np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("artifact", nargs="+")
    parser.add_argument("--inputs", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        data, sha256 = runner._read_inputs(args.inputs)
        if not runner.verify_inputs(args.inputs, args.artifact[0], sha256):
            raise runner.RunnerError(f"{args.inputs} is not the eval inputs the manifest lists")
        arrays = {name: logits_of(name, data, args.threads) for name in args.artifact}
    except runner.RunnerError as exc:
        print(f"runner error: {exc}", file=sys.stderr)
        return 2
    with open(args.out, "wb") as fh:
        np.savez(fh, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
