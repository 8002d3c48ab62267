#!/usr/bin/env python3
"""Check an ONNX model exported by `attnas export` and run it with onnxruntime.

    python scripts/onnx_check.py DIR/model.onnx images.npy [--logits ref.npy] [--atol A] [--rtol R] [--json]

1. `onnx.checker.check_model(full_check=True)`: the graph is valid ONNX and its shapes infer.
2. onnxruntime (CPU) runs the model on `images.npy` ([N, 3, r, r] float32 NCHW, already resized to the
   subnet's resolution and normalised: `attnas eval --dump-inputs` writes such a file).
3. With `--logits ref.npy` (e.g. from `attnas eval --dump-logits` on the same images), compares:
   passes when |onnx - ref| <= atol + rtol * max|ref| everywhere (the scale is the largest reference
   logit, so tiny logits are not held to a relative bound they cannot meet in float32).

Prints a summary (a JSON object with --json) and exits 1 when the check or the comparison fails.
Needs numpy, onnx and onnxruntime (scripts/setup-python-tools.sh, or pip install them).
"""

import argparse
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model.onnx written by attnas export")
    p.add_argument("images", help=".npy of [N, 3, r, r] float32 inputs")
    p.add_argument("--logits", help=".npy of reference logits [N, classes] to compare with")
    p.add_argument("--atol", type=float, default=1e-4, help="absolute tolerance (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-4, help="tolerance relative to max|ref| (default 1e-4)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    a = p.parse_args()

    model = onnx.load(a.model)
    onnx.checker.check_model(model, full_check=True)
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))

    images = np.load(a.images).astype(np.float32, copy=False)
    sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    out = sess.run(None, {inp.name: images})[0]
    summary = {
        "checker": "ok",
        "opset": opset,
        "ir_version": model.ir_version,
        "input": inp.name,
        "input_shape": list(images.shape),
        "output_shape": list(out.shape),
        "argmax": out.argmax(axis=1).tolist()[:16],
    }
    ok = True
    if a.logits:
        ref = np.load(a.logits).astype(np.float32, copy=False)
        if ref.shape != out.shape:
            summary["error"] = f"reference logits have shape {list(ref.shape)}, onnx gives {list(out.shape)}"
            ok = False
        else:
            diff = np.abs(out.astype(np.float64) - ref.astype(np.float64))
            scale = float(np.abs(ref).max())
            bound = a.atol + a.rtol * scale
            summary.update(
                {
                    "max_abs_diff": float(diff.max()),
                    "max_ref_abs": scale,
                    "bound": bound,
                    "argmax_agreement": float((out.argmax(axis=1) == ref.argmax(axis=1)).mean()),
                    "within_tolerance": bool(diff.max() <= bound),
                }
            )
            ok = bool(diff.max() <= bound)
    if a.json:
        print(json.dumps(summary))
    else:
        for k, v in summary.items():
            print(f"{k}: {v}")
        print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
