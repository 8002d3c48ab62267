#!/usr/bin/env python3
"""Write a file that mimics an official AttentiveNAS supernet checkpoint, for testing the converter
without PyTorch.

    make_fake_attentivenas_checkpoint.py OUT.safetensors|OUT.npz [--space tiny] [--seed 0]
        [--wrong-shape NAME] [--omit NAME]

Every tensor of `attnas params --config SPACE --json`, named with the `module.` prefix of a
DistributedDataParallel state dict and in PyTorch's shape, with random values: conv/linear weights
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), BN gamma U(0.5, 1.5), biases and running means U(-0.1, 0.1),
running variances U(0.5, 1.5). Every third tensor is stored as float16 (a safetensors output keeps
the dtype). The extras the real file has are added too: an int64 `num_batches_tracked` per BN and
`bn_tracking.0.*` buffers. --wrong-shape gives NAME (without `module.`) a first dimension 8 larger;
--omit leaves NAME out. The attnas binary is found as in convert_attentivenas_checkpoint.py.
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from convert_attentivenas_checkpoint import find_attnas  # noqa: E402


def value_for(rng, name, shape):
    import numpy as np

    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if name.endswith("running_var") or (name.endswith(".weight") and ".bn." in name):
        return rng.uniform(0.5, 1.5, shape)
    if len(shape) == 1:  # biases, BN beta, running means
        return rng.uniform(-0.1, 0.1, shape)
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("output")
    ap.add_argument("--space", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--wrong-shape", action="append", default=[], metavar="NAME")
    ap.add_argument("--omit", action="append", default=[], metavar="NAME")
    ap.add_argument("--attnas")
    args = ap.parse_args()

    import numpy as np

    run = subprocess.run(
        [find_attnas(args.attnas), "params", "--config", args.space, "--json"],
        capture_output=True, text=True, check=False,
    )
    if run.returncode != 0:
        print(f"error: attnas params: {run.stderr.strip()}", file=sys.stderr)
        return 2
    table = json.loads(run.stdout)["tensors"]
    names = {t["name"] for t in table}
    for n in args.wrong_shape + args.omit:
        if n not in names:
            print(f"error: '{n}' is not a tensor of space {args.space}", file=sys.stderr)
            return 2

    rng = np.random.default_rng(args.seed)
    out = {}
    for i, t in enumerate(table):
        name, shape = t["name"], list(t["shape"])
        if name in args.omit:
            continue
        if name in args.wrong_shape:
            shape[0] += 8
        v = value_for(rng, name, shape)
        out["module." + name] = v.astype(np.float16 if i % 3 == 2 else np.float32)
        if name.endswith(".bn.bn.running_var"):
            bn = name[: -len(".running_var")]
            c = shape[0]
            out[f"module.{bn}.num_batches_tracked"] = np.array(1000 + i, dtype=np.int64)
            tracking = bn[: -len(".bn")] + ".bn_tracking.0"
            out[f"module.{tracking}.running_mean"] = np.zeros(c, dtype=np.float32)
            out[f"module.{tracking}.running_var"] = np.ones(c, dtype=np.float32)
            out[f"module.{tracking}.num_batches_tracked"] = np.array(0, dtype=np.int64)
    if args.output.endswith(".npz"):
        np.savez(args.output, **out)
    else:
        from safetensors.numpy import save_file

        save_file(out, args.output, metadata={"note": "fake AttentiveNAS checkpoint for tests"})
    print(f"wrote {args.output}: {len(out)} tensors (space {args.space}, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
