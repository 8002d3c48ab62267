#!/usr/bin/env python3
"""Read a TensorBoard log folder with TensorBoard's own reader (the event accumulator of the `tensorboard`
package) and print what it holds as one JSON object: every scalar tag with its (step, value) list, every
histogram tag with (step, count, min, max), every text tag with its steps, and the steps that appear more
than once per tag (TensorBoard would draw those as a zig-zag).

    .venv-tools/bin/python scripts/tensorboard_check.py OUT/tb [--expect-tags loss/max,lr] [--expect-steps N]

With --expect-* it also checks, and exits 1 naming what is missing, duplicated or short; otherwise it only
reports. The accumulator keeps every event (size_guidance 0) and does NOT purge orphaned data on
SessionLog.START (TensorBoard's default would hide duplicates left on disk): what it reports is what the
files hold.
"""
import argparse
import json
import sys

from tensorboard.backend.event_processing import event_accumulator as ea


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("logdir")
    ap.add_argument("--expect-tags", default="", help="comma-separated scalar tags that must be present")
    ap.add_argument("--expect-steps", type=int, default=None, help="the steps 1..N each logged once per tag")
    args = ap.parse_args()

    acc = ea.EventAccumulator(
        args.logdir,
        size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.TENSORS: 0},
        purge_orphaned_data=False,
    )
    acc.Reload()
    tags = acc.Tags()
    out = {"scalars": {}, "histograms": {}, "text": {}, "duplicates": {}}
    for tag in tags.get("scalars", []):
        events = acc.Scalars(tag)
        out["scalars"][tag] = [[e.step, e.value] for e in events]
        steps = [e.step for e in events]
        dup = sorted({s for s in steps if steps.count(s) > 1})
        if dup:
            out["duplicates"][tag] = dup
        if any(b < a for a, b in zip(steps, steps[1:])):
            out["duplicates"].setdefault(tag, []).append("not ascending")
    for tag in tags.get("histograms", []):
        out["histograms"][tag] = [[e.step, e.histogram_value.num, e.histogram_value.min, e.histogram_value.max]
                                  for e in acc.Histograms(tag)]
    for tag in tags.get("tensors", []):
        out["text"][tag] = [[e.step, e.tensor_proto.string_val[0].decode("utf-8", "replace")[:200]]
                            for e in acc.Tensors(tag)]
    print(json.dumps(out))

    problems = []
    for tag in filter(None, args.expect_tags.split(",")):
        if tag not in out["scalars"]:
            problems.append(f"scalar tag {tag} missing (have: {', '.join(sorted(out['scalars']))})")
    if out["duplicates"]:
        problems.append(f"steps logged more than once: {out['duplicates']}")
    if args.expect_steps is not None:
        for tag in ("loss/max", "lr"):
            steps = [s for s, _ in out["scalars"].get(tag, [])]
            if steps != list(range(1, args.expect_steps + 1)):
                problems.append(f"{tag}: steps {steps[:5]}...{steps[-5:]} ({len(steps)}), expected 1..{args.expect_steps}")
    for p in problems:
        print(f"tensorboard_check: {args.logdir}: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
