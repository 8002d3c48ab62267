#!/usr/bin/env python3
"""Time ONNX models in onnxruntime (CPU), as `attnas latency --runtime onnxruntime` and
`attnas latency-table --runtime onnxruntime` do (the binary embeds this file and runs it with the Python
tools venv).

    python scripts/onnx_latency.py MODEL.onnx [MODEL.onnx ...] [--list FILE] [--batch 1] [--threads T]
                                   [--warmup 3] [--repeats 20]

Each model gets a session with intra-op threads = --threads (0: onnxruntime's default), one inter-op
thread, sequential execution and every graph optimisation; its input is random normal data of shape
[batch, C, H, W] (the model's own C, H, W). After --warmup untimed runs, each of --repeats runs is timed
with time.perf_counter around `session.run`. Prints one JSON line first ({"onnxruntime": version,
"threads": T}) and then one per model, in order: {"model": path, "median_ms", "p10_ms", "p90_ms",
"runs"}. Needs numpy and onnxruntime (scripts/setup-python-tools.sh).
"""

import argparse
import json
import sys
import time

import numpy as np
import onnxruntime as ort


def percentile(sorted_values, p):
    x = p * (len(sorted_values) - 1)
    lo, hi = int(x), min(int(x) + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (x - lo)


def time_model(path, batch, threads, warmup, repeats):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [batch] + [int(d) for d in inp.shape[1:]]
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    feed = {inp.name: x}
    for _ in range(warmup):
        sess.run(None, feed)
    samples = []
    for _ in range(max(repeats, 1)):
        t = time.perf_counter()
        sess.run(None, feed)
        samples.append((time.perf_counter() - t) * 1e3)
    samples.sort()
    return {
        "model": path,
        "median_ms": percentile(samples, 0.5),
        "p10_ms": percentile(samples, 0.1),
        "p90_ms": percentile(samples, 0.9),
        "runs": len(samples),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", help="ONNX files")
    p.add_argument("--list", help="a file with one ONNX path per line (added after the positional ones)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    a = p.parse_args()
    models = list(a.models)
    if a.list:
        with open(a.list) as f:
            models += [line.strip() for line in f if line.strip()]
    print(json.dumps({"onnxruntime": ort.__version__, "threads": a.threads}), flush=True)
    for m in models:
        print(json.dumps(time_model(m, a.batch, a.threads, a.warmup, a.repeats)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
