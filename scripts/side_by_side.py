#!/usr/bin/env python3
"""Side by side (issue #13 item 6): the original AttentiveNAS PyTorch training step against
`attnas bench train`, on the same card, and per op at the AttentiveNAS shapes.

Why: attnas exists to run the AttentiveNAS recipe faster than the PyTorch original. The goal is a full
step (sandwich rule: max subnet on the labels, the min and attentively sampled subnets distilled in place
from the max subnet's logits; BestUp-k candidates scored by their loss on the current batch; batch 64 per
GPU at 224 input) at least 2x the original under AMP bf16 + channels_last and 4x the original in fp32.
This script measures both sides on one machine, one after the other, and prints the ratios and the rows
for docs/gpu-runs.md.

What it measures:
  * The original step. The AttentiveNAS source is not part of this project and is never committed:
    --attentivenas PATH names a checkout (DEVELOPERS.md says how to bring it). The script imports that
    checkout and drives its own classes: the dynamic supernet built from its training config
    (configs/train_attentive_nas_models.yml), its label-smoothing and in-place distillation losses
    (utils/loss_ops.py), its optimizer builder (solver/, SGD momentum 0.9 Nesterov, no weight decay on
    BN and biases) and its ArchSampler (sampler/). The FLOPs table the sampler reads is not published;
    it is built here by the supernet's own uniform sampling and analytic FLOPs (--table-size archs,
    25-MFLOP bins as in the config). One step is the sequence of train_attentive_nas.py's loop: zero
    grads; max subnet with dropout / drop-connect, label-smoothed CE, backward; then, with no dropout,
    num_arch_training - 2 middle subnets (BestUp-k: a FLOPs target, k candidates at that target each
    scored by a no-grad forward and CE on the batch, the lowest loss kept) and the min subnet, each
    distilled from the max subnet's detached logits, backward; gradient value clip; optimizer step.
    Single process, no DDP, no data loader: one fixed random batch on the device (as attnas bench
    train's synthetic batch), input side --resolution resized by the model to each subnet's resolution.
    Modes: fp32 (PyTorch's defaults: cuDNN convolutions may use TF32, see --tf32), amp-bf16
    (torch.autocast bf16), amp-bf16-cl (the same plus model and input in channels_last).
    torch.backends.cudnn.benchmark: off (what train_attentive_nas.py runs: it never sets it) and on;
    with it on, the warm-up covers every timed step's architectures, so the timed steps measure a
    tuned cache, not the tuning. Each step is timed with CUDA events and a wall clock between device
    synchronisations; images/s = batch / median wall time of the timed steps (the mean is printed too).
    Every mode replays the same architecture stream (reseeded before the warm-up and the timed steps).
  * attnas: `attnas bench train` with the same batch, k, side, warm-up and steps, in fp32, and in bf16
    when the build has it (`--precision bf16` in `attnas bench train --help`); its per-step wall times
    (stderr) give the median, its JSON the mean.
  * Per op, PyTorch against attnas's kernel benches at the same shapes: the depthwise conv (fwd,
    grad-input, grad-weight), BN + swish (train fwd, train bwd, eval fwd) and the 1x1 convs as GEMMs
    (fwd, grad-input, grad-weight). With --attnas-bench-logs DIR (the folder where the GPU bundle's
    run.sh left bench-depthwise.log, bench-batchnorm.log and bench-pointwise.log) the shapes and the
    attnas times come from those logs; otherwise the shapes of the max subnet (r 288, k 5) and the min
    subnet (r 192, k 3) are computed here and only PyTorch's times are printed. PyTorch is timed in
    fp32 (TF32 off: attnas's kernels are plain FP32) and bf16, NCHW and channels_last (and a plain
    matmul for the 1x1 convs; the original's own swish and F.silu after BN), cudnn.benchmark on; the
    fastest variant is compared. Timing as the attnas benches do: warm-up calls, then the mean of the
    repeats between synchronisations.

Order: attnas, the PyTorch modes with cudnn.benchmark off, per op, the modes with it on. --budget-s stops
starting new measurements (and cuts a mode's steps short) once spent; what is left is reported skipped.

Ratios are "times faster than PyTorch": attnas images/s / PyTorch images/s for the step, PyTorch ms /
attnas ms per op.

    python3 scripts/side_by_side.py --attentivenas third_party/AttentiveNAS [--attnas BIN]
        [--batch 64 --k 3 --resolution 224 --warmup 3 --steps 10 --device cuda]
        [--attnas-bench-logs DIR] [--budget-s S] [--out-md FILE] [--json FILE]

A CPU smoke test (no GPU): --device cpu --batch 4 --resolution 128 --steps 2 --warmup 1.
Exit status: 0 when everything asked for was measured, 1 when some measurement failed, 2 for a usage
error (a missing or invalid --attentivenas checkout, no PyTorch, no CUDA for --device cuda).
"""

import argparse
import datetime
import importlib.util
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BRING_IT = (
    "DEVELOPERS.md (repository root) says how to bring it: clone facebookresearch/AttentiveNAS into "
    "third_party/AttentiveNAS (gitignored, never committed) and pass --attentivenas third_party/AttentiveNAS"
)
# files of the original that this script drives; a checkout without them is not one
REQUIRED_FILES = (
    "models/attentive_nas_dynamic_model.py",
    "models/model_factory.py",
    "utils/loss_ops.py",
    "solver/build.py",
    "sampler/attentive_nas_sampler.py",
)
DEFAULT_CONFIG = "configs/train_attentive_nas_models.yml"
MODES = ("fp32", "amp-bf16", "amp-bf16-cl")
MODE_TITLES = {"fp32": "fp32", "amp-bf16": "AMP bf16", "amp-bf16-cl": "AMP bf16 + channels_last"}
GOALS = (("amp-bf16-cl", 2.0), ("fp32", 4.0))


class UsageError(Exception):
    """Exit status 2 with the message."""


# ---------------------------------------------------------------------------------------------------
# arguments


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time the original AttentiveNAS PyTorch training step (fp32, AMP bf16, AMP bf16 + "
        "channels_last) against `attnas bench train` (fp32, bf16) on the same card, and the depthwise "
        "conv, BN + swish and 1x1 GEMMs per op; print the ratios and the rows for docs/gpu-runs.md.",
        epilog="The original source is never part of this project: " + BRING_IT + ".",
    )
    p.add_argument("--attentivenas", metavar="PATH",
                   help="checkout of facebookresearch/AttentiveNAS (required; see DEVELOPERS.md)")
    p.add_argument("--config", metavar="YML",
                   help="training config of the original (default: PATH/" + DEFAULT_CONFIG + ")")
    p.add_argument("--attnas", metavar="BIN",
                   help="attnas binary (default: attnas next to this script, as in the GPU bundle, then "
                   "target/release/attnas of this repository, then attnas on PATH)")
    p.add_argument("--batch", type=int, default=64, help="images per step (default 64)")
    p.add_argument("--k", type=int, default=3, help="BestUp candidates per middle subnet; 1 = uniform (default 3)")
    p.add_argument("--resolution", type=int, default=224,
                   help="side of the input batch; each subnet resizes it to its own resolution (default 224)")
    p.add_argument("--steps", type=int, default=10, help="timed steps per mode (default 10)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before them (default 3)")
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: a smoke test; default cuda)")
    p.add_argument("--modes", default=",".join(MODES),
                   help="PyTorch step modes, comma-separated from " + ", ".join(MODES) + " (default: all)")
    p.add_argument("--cudnn-benchmark", choices=("off", "on", "both"), default="both",
                   help="torch.backends.cudnn.benchmark for the PyTorch step (default both: off as the "
                   "original runs, then on)")
    p.add_argument("--tf32", choices=("default", "off"), default="default",
                   help="PyTorch's fp32 step: default leaves PyTorch's TF32 settings (cuDNN convs may use "
                   "TF32), off forces plain FP32 (default: default)")
    p.add_argument("--table-size", type=int, default=2000,
                   help="architectures in the FLOPs table the original ArchSampler is built on (default 2000)")
    p.add_argument("--attnas-bench-logs", metavar="DIR",
                   help="folder with bench-depthwise.log, bench-batchnorm.log, bench-pointwise.log "
                   "(the GPU bundle's logs): per-op shapes and attnas times")
    p.add_argument("--ops-subnets", default="max:288,min:192",
                   help="per-op shapes of these subnets (name:resolution; default max:288,min:192, the "
                   "sandwich's two ends)")
    p.add_argument("--ops-batch", type=int, help="per-op batch when no bench logs give one (default --batch)")
    p.add_argument("--op-repeats", type=int, help="per-op timed calls (default 20 on a GPU, 2 on the CPU)")
    p.add_argument("--op-warmup", type=int, help="per-op warm-up calls (default 3 on a GPU, 1 on the CPU)")
    p.add_argument("--no-ops", action="store_true", help="skip the per-op comparison")
    p.add_argument("--no-step", action="store_true", help="skip the training-step comparison")
    p.add_argument("--budget-s", type=float, default=0.0,
                   help="stop starting new measurements after this many seconds (0: no limit); what is "
                   "left is reported as skipped")
    p.add_argument("--commit", help="attnas commit for the rows (default: COMMIT next to the binary, else git)")
    p.add_argument("--out-md", metavar="FILE", help="write the markdown rows for docs/gpu-runs.md here")
    p.add_argument("--json", metavar="FILE", help="write every measurement as JSON here")
    a = p.parse_args(argv)
    for name in ("batch", "k", "resolution", "steps", "table_size"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if a.warmup < 0:
        p.error("--warmup must be at least 0")
    if a.batch < 2:
        p.error("--batch must be at least 2 (the original's forward squeezes a batch of 1 away)")
    a.modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    for m in a.modes:
        if m not in MODES:
            p.error(f"--modes: unknown mode '{m}'; choose from {', '.join(MODES)}")
    try:
        a.ops_subnets = [(n, int(r)) for n, r in (s.split(":") for s in a.ops_subnets.split(",") if s)]
    except ValueError:
        p.error("--ops-subnets: write name:resolution pairs, e.g. max:288,min:192")
    for n, _ in a.ops_subnets:
        if n not in ("max", "min"):
            p.error(f"--ops-subnets: subnet '{n}' is neither max nor min")
    return a


def check_attentivenas(path):
    """The checkout's absolute path, or UsageError naming what is wrong and how to bring it."""
    if not path:
        raise UsageError("--attentivenas PATH is required: the original AttentiveNAS source is not part of "
                         "this project. " + BRING_IT + ".")
    root = os.path.abspath(path)
    if not os.path.isdir(root):
        raise UsageError(f"--attentivenas {path}: no such folder. " + BRING_IT + ".")
    missing = [f for f in REQUIRED_FILES if not os.path.isfile(os.path.join(root, f))]
    if missing:
        raise UsageError(f"--attentivenas {path}: not an AttentiveNAS checkout (missing {', '.join(missing)}). "
                         + BRING_IT + ".")
    return root


def find_attnas(arg):
    if arg:
        return arg if os.path.isfile(arg) else shutil.which(arg)
    for cand in (os.path.join(HERE, "attnas"), os.path.join(HERE, "..", "target", "release", "attnas")):
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return os.path.abspath(cand)
    return shutil.which("attnas")


def find_commit(arg, attnas_bin):
    if arg:
        return arg
    if attnas_bin:
        f = os.path.join(os.path.dirname(os.path.abspath(attnas_bin)), "COMMIT")
        if os.path.isfile(f):
            with open(f) as fh:
                return fh.read().strip() or "-"
    try:
        out = subprocess.run(["git", "-C", HERE, "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             timeout=10)
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return "-"


class Budget:
    def __init__(self, seconds):
        self.t0 = time.monotonic()
        self.seconds = seconds

    def left(self):
        return math.inf if self.seconds <= 0 else self.seconds - (time.monotonic() - self.t0)

    def spent(self):
        return self.left() <= 0


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def say(*parts):
    print(*parts, flush=True)


# ---------------------------------------------------------------------------------------------------
# attnas side


def attnas_probe(bin_path):
    """(version line, bench train --help text); raises OSError if the binary does not run."""
    v = subprocess.run([bin_path, "--version"], capture_output=True, text=True, timeout=60)
    version = (v.stdout or v.stderr).strip().splitlines()[0] if (v.stdout or v.stderr).strip() else "?"
    h = subprocess.run([bin_path, "bench", "train", "--help"], capture_output=True, text=True, timeout=60)
    if h.returncode != 0:
        raise OSError(f"`{bin_path} bench train --help` exited {h.returncode}: {h.stderr.strip()[-400:]}")
    return version, h.stdout


STEP_LINE = re.compile(r"^step (\d+): ([0-9.]+) s\b", re.M)


def run_attnas_bench(bin_path, a, device, extra, budget):
    """One `attnas bench train` run: a result dict (images_per_sec from the median step), or an error."""
    timeout = min(600.0, budget.left())
    if timeout < 5:
        return {"skipped": "time budget spent"}
    with tempfile.TemporaryDirectory(prefix="attnas-bench-") as tmp:
        jpath = os.path.join(tmp, "bench.json")
        cmd = [bin_path, "bench", "train", "--device", device, "--batch", str(a.batch), "--k", str(a.k), "--side",
               str(a.resolution), "--warmup", str(a.warmup), "--steps", str(a.steps), "--json", jpath] + extra
        say("  $ " + " ".join(cmd))
        t0 = time.monotonic()
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"cmd": cmd, "error": f"timed out after {timeout:.0f} s"}
        out = {"cmd": cmd, "returncode": r.returncode, "wall_s": time.monotonic() - t0, "stdout": r.stdout,
               "stderr_tail": r.stderr[-2000:]}
        if r.returncode != 0:
            lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
            out["error"] = lines[-1] if lines else f"exit {r.returncode}"
            return out
        try:
            with open(jpath) as fh:
                js = json.load(fh)
        except (OSError, ValueError) as e:
            out["error"] = f"no JSON result ({e})"
            return out
    steps = [(int(i), float(s)) for i, s in STEP_LINE.findall(r.stderr)]
    timed = [s for i, s in steps if i >= a.warmup]
    out["json"] = js
    out["step_s_mean"] = float(js["step_s"])
    if timed:
        out["step_s"] = timed
        out["step_s_median"] = median(timed)
        out["median_from"] = "per-step lines"
    else:  # no per-step lines: the mean is all there is
        out["step_s_median"] = out["step_s_mean"]
        out["median_from"] = "JSON mean (no per-step lines on stderr)"
    out["images_per_sec"] = a.batch / out["step_s_median"]
    out["images_per_sec_mean"] = a.batch / out["step_s_mean"]
    out["device"] = js.get("device")
    return out


def attnas_side(a, bin_path, device, budget):
    res = {"binary": bin_path}
    if not bin_path:
        res["error"] = (f"--attnas {a.attnas}: not found" if a.attnas else
                        "attnas binary not found next to this script, in target/release or on PATH (pass --attnas BIN)")
        say("attnas: " + res["error"])
        return res
    try:
        version, help_text = attnas_probe(bin_path)
    except (OSError, subprocess.SubprocessError) as e:
        res["error"] = f"{bin_path} does not run: {e}"
        say("attnas: " + res["error"])
        return res
    res["version"] = version
    say(f"attnas: {bin_path} ({version})")
    dev = "cpu" if device.startswith("cpu") else device
    say("attnas fp32:")
    # builds with --precision default to bf16 on sm_80+ ("auto"): ask for fp32 explicitly
    fp32_flags = ["--precision", "fp32"] if "--precision" in help_text else []
    res["fp32"] = run_attnas_bench(bin_path, a, dev, fp32_flags, budget)
    report_attnas("fp32", res["fp32"])
    if "--precision" not in help_text:
        res["bf16"] = {"unavailable": "no --precision in `attnas bench train --help`"}
        say("attnas bf16: not available in this build (no --precision in `attnas bench train --help`)")
    else:
        say("attnas bf16:")
        r = run_attnas_bench(bin_path, a, dev, ["--precision", "bf16"], budget)
        if "error" in r and r.get("returncode") == 2:  # refused as a usage error: the build has no bf16
            res["bf16"] = {"unavailable": r["error"], "run": r}
            say(f"attnas bf16: not available in this build (attnas said: {r['error']})")
        else:
            res["bf16"] = r
            report_attnas("bf16", r)
    return res


def report_attnas(name, r):
    if "skipped" in r:
        say(f"  attnas {name}: skipped ({r['skipped']})")
    elif "error" in r:
        say(f"  attnas {name}: FAILED: {r['error']}")
    else:
        say(f"  attnas {name}: {ips(r['images_per_sec'])} images/s (median step {1e3 * r['step_s_median']:.1f} ms, "
            f"mean {1e3 * r['step_s_mean']:.1f} ms; median from {r['median_from']}) on {r['device']}")


# ---------------------------------------------------------------------------------------------------
# the original: import, config, model, sampler, step


class _Attr(dict):
    """Attribute access to a nested dict, for the config when PyYAML (and so utils/config.py) is missing."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value


_YAML_FLOAT = re.compile(r"^[-+]?([0-9][0-9_]*)?\.[0-9.]*([eE][-+][0-9]+)?$")


def _yaml_scalar(s):
    s = s.strip()
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"":
        return s[1:-1]
    if s in ("True", "true"):
        return True
    if s in ("False", "false"):
        return False
    if s in ("null", "~", "None"):
        return None
    if s.startswith("[") and s.endswith("]"):
        inner = s[1:-1].strip()
        return [_yaml_scalar(x) for x in inner.split(",")] if inner else []
    if re.fullmatch(r"[-+]?[0-9]+", s):
        return int(s)
    if _YAML_FLOAT.match(s):  # YAML 1.1 as PyYAML reads it: '1e-5' (no dot) stays a string
        return float(s)
    return s


def load_yaml_subset(text):
    """The block-mapping subset of YAML the original's configs use (mappings, flow lists, scalars)."""
    root = _Attr()
    stack = [(-1, root)]
    for raw in text.splitlines():
        line = raw.split(" #")[0].rstrip() if not raw.lstrip().startswith("#") else ""
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        key, sep, rest = line.strip().partition(":")
        if not sep:
            raise ValueError(f"config line not understood without PyYAML: {raw!r}")
        while stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1]
        if rest.strip():
            parent[key.strip()] = _yaml_scalar(rest)
        else:
            child = _Attr()
            parent[key.strip()] = child
            stack.append((indent, child))
    return root


def _load_file_module(name, path):
    """A module of the checkout by file: utils/ and sampler/ have no __init__.py, so a `utils` package
    elsewhere on sys.path would shadow them as namespace packages."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Original:
    """The original's pieces, imported from the checkout."""

    def __init__(self, root, config_path):
        self.root = root
        if root not in sys.path:
            sys.path.insert(0, root)
        import models.model_factory as model_factory  # noqa: E402 (the checkout's package)
        import models.modules.nn_utils as nn_utils
        import solver

        self.model_factory = model_factory
        self.nn_utils = nn_utils
        self.build_optimizer = solver.build_optimizer
        self.loss_ops = _load_file_module("attentivenas_loss_ops", os.path.join(root, "utils", "loss_ops.py"))
        self.sampler_mod = _load_file_module("attentivenas_sampler",
                                             os.path.join(root, "sampler", "attentive_nas_sampler.py"))
        self.config_path = config_path
        try:
            import yaml  # noqa: F401
            cfg_mod = _load_file_module("attentivenas_config", os.path.join(root, "utils", "config.py"))
            self.args = cfg_mod.setup(config_path)
            self.config_reader = "utils/config.py (PyYAML)"
        except ImportError:
            with open(config_path) as fh:
                self.args = load_yaml_subset(fh.read())
            self.config_reader = "this script's YAML subset reader (no PyYAML)"

    def new_model(self):
        return self.model_factory.create_model(self.args)


def build_flops_table(orig, model, size, seed, path):
    """The arch-to-FLOPs map the original's ArchSampler reads (one dict literal per line), from the
    supernet's own uniform sampling and analytic FLOPs."""
    random.seed(seed)
    flops = []
    with open(path, "w") as fh:
        for _ in range(size):
            cfg = model.sample_active_subnet(compute_flops=True)
            flops.append(cfg["flops"])
            fh.write(repr(cfg) + "\n")
    return min(flops), median(flops), max(flops)


class OriginalStep:
    """train_attentive_nas.py's step, driven on the original's classes (see the module docstring)."""

    def __init__(self, torch, orig, a, device, mode, table_path):
        self.torch = torch
        self.args = orig.args
        self.k = a.k
        self.device = device
        self.amp = mode != "fp32"
        self.channels_last = mode == "amp-bf16-cl"
        self.dev_type = "cuda" if device.type == "cuda" else "cpu"
        torch.manual_seed(0)
        model = orig.new_model().to(device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.train()
        self.model = model
        self.criterion = orig.loss_ops.CrossEntropyLossSmooth(self.args.label_smoothing).to(device)
        self.soft_criterion = orig.loss_ops.KLLossSoft().to(device)
        self.optimizer = orig.build_optimizer(self.args, model)
        discretize = self.args.sampler.discretize_step if "sampler" in self.args else 25
        self.sampler = orig.sampler_mod.ArchSampler(table_path, discretize, model, None) if a.k > 1 else None
        self.num_subnets = max(2, int(self.args.get("num_arch_training", 2)))
        self.dropout = float(self.args.get("dropout", 0))
        self.drop_connect = float(self.args.get("drop_connect", 0))
        self.dc_last_two = bool(self.args.get("drop_connect_only_last_two_stages", True))
        self.clip = self.args.get("grad_clip_value", None)
        self.sampler_s = 0.0  # host seconds in the ArchSampler (its analytic FLOPs retries)
        g = torch.Generator(device="cpu").manual_seed(1)
        images = torch.randn(a.batch, 3, a.resolution, a.resolution, generator=g)
        labels = torch.randint(0, int(self.args.get("n_classes", 1000)), (a.batch,), generator=g)
        self.images = images.to(device)
        if self.channels_last:
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.labels = labels.to(device)

    def autocast(self):
        return self.torch.autocast(self.dev_type, dtype=self.torch.bfloat16, enabled=self.amp)

    def pick_middle_subnet(self):
        """BestUp-k on the current batch (k = 1: uniform), leaving the chosen subnet active."""
        torch, m = self.torch, self.model
        if self.sampler is None:
            m.sample_active_subnet()
            return
        t = time.perf_counter()
        target = self.sampler.sample_one_target_flops()
        candidates = self.sampler.sample_archs_according_to_flops(target, n_samples=self.k)
        self.sampler_s += time.perf_counter() - t
        losses = []
        with torch.no_grad():
            for arch in candidates:
                m.set_active_subnet(**arch)
                with self.autocast():
                    losses.append(self.criterion(m(self.images), self.labels).float())
        best = int(torch.stack(losses).argmin().item())  # highest score = -loss
        m.set_active_subnet(**candidates[best])

    def run(self):
        torch, m = self.torch, self.model
        self.optimizer.zero_grad()
        m.sample_max_subnet()
        m.set_dropout_rate(self.dropout, self.drop_connect, self.dc_last_two)
        with self.autocast():
            out = m(self.images)
            loss = self.criterion(out, self.labels)
        loss.backward()
        teacher = out.clone().detach()
        m.set_dropout_rate(0, 0, self.dc_last_two)
        for i in range(1, self.num_subnets):
            if i == self.num_subnets - 1:
                m.sample_min_subnet()
            else:
                self.pick_middle_subnet()
            with self.autocast():
                loss = self.soft_criterion(m(self.images), teacher)
            loss.backward()
        if self.clip:
            torch.nn.utils.clip_grad_value_(m.parameters(), float(self.clip))
        self.optimizer.step()
        return loss


def time_original_mode(torch, orig, a, device, mode, cudnn_benchmark, table_path, budget):
    """Warm-up and timed steps of one mode; a result dict."""
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cudnn_benchmark
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    step = OriginalStep(torch, orig, a, device, mode, table_path)

    def sync():
        if cuda:
            torch.cuda.synchronize(device)

    # with cudnn.benchmark the warm-up covers the timed steps' architectures (the same stream replayed)
    warmup = max(a.warmup, a.steps) if cudnn_benchmark else a.warmup
    res = {"mode": mode, "cudnn_benchmark": cudnn_benchmark, "warmup": warmup}
    random.seed(0)
    torch.manual_seed(0)
    t0 = time.monotonic()
    for i in range(warmup):
        if budget.spent():
            res["skipped"] = f"time budget spent during the warm-up ({i} of {warmup} steps)"
            return res
        step.run()
    sync()
    res["warmup_s"] = time.monotonic() - t0
    random.seed(0)
    torch.manual_seed(0)
    step.sampler_s = 0.0
    wall, gpu = [], []
    for i in range(a.steps):
        if i > 0 and budget.spent():
            res["cut"] = f"time budget spent after {i} of {a.steps} timed steps"
            break
        sync()
        if cuda:
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
        t = time.perf_counter()
        loss = step.run()
        if cuda:
            e1.record()
        sync()
        wall.append(time.perf_counter() - t)
        if cuda:
            gpu.append(e0.elapsed_time(e1) / 1e3)
    res["loss"] = float(loss.detach().float().item())
    res["step_s"] = wall
    res["step_s_median"] = median(wall)
    res["step_s_mean"] = mean(wall)
    res["images_per_sec"] = a.batch / res["step_s_median"]
    res["images_per_sec_mean"] = a.batch / res["step_s_mean"]
    res["sampler_host_s_mean"] = step.sampler_s / len(wall)
    if gpu:
        res["event_s_median"] = median(gpu)
    if cuda:
        res["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    del step
    return res


def report_original(r):
    tag = f"PyTorch {MODE_TITLES[r['mode']]}, cudnn.benchmark {'on' if r['cudnn_benchmark'] else 'off'}"
    if "skipped" in r:
        say(f"  {tag}: skipped ({r['skipped']})")
    elif "error" in r:
        say(f"  {tag}: FAILED: {r['error']}")
    else:
        extra = f", CUDA events {1e3 * r['event_s_median']:.1f} ms" if "event_s_median" in r else ""
        extra += f", ArchSampler host {1e3 * r['sampler_host_s_mean']:.1f} ms/step"
        mem = f", peak {r['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in r else ""
        cut = f" [{r['cut']}]" if "cut" in r else ""
        say(f"  {tag}: {ips(r['images_per_sec'])} images/s (median step {1e3 * r['step_s_median']:.1f} ms, mean "
            f"{1e3 * r['step_s_mean']:.1f} ms{extra}; {len(r['step_s'])} steps after {r['warmup']} warm-up{mem}; "
            f"last loss {r['loss']:.3f}){cut}")


def original_side(torch, orig, a, device, budget, between):
    """Every requested (mode, cudnn.benchmark) run, in order of what the goals need most: the modes with
    cudnn.benchmark off (as the original runs), then `between()` (the per-op pass), then the modes with it
    on (its autotuning of every new shape makes their warm-up the slowest part, so they go last)."""
    say(f"original: {orig.root} (config {os.path.relpath(orig.config_path, orig.root)}, read by {orig.config_reader})")
    bench = {"off": [False], "on": [True], "both": [False, True]}[a.cudnn_benchmark]
    order = [(m, False) for m in ("fp32", "amp-bf16-cl", "amp-bf16") if m in a.modes and False in bench]
    if True in bench:
        order += [(m, True) for m in ("amp-bf16-cl", "fp32", "amp-bf16") if m in a.modes]
    hook_at = next((i for i, (_, cb) in enumerate(order) if cb), len(order))  # before this run
    results = []
    with tempfile.TemporaryDirectory(prefix="attentivenas-table-") as tmp:
        table = os.path.join(tmp, "flops_archs_table.map")
        t0 = time.monotonic()
        lo, mid, hi = build_flops_table(orig, orig.new_model(), a.table_size, 0, table)
        say(f"  FLOPs table for the original ArchSampler: {a.table_size} uniform archs, {lo:.0f} / {mid:.0f} / "
            f"{hi:.0f} MFLOPs min / median / max ({time.monotonic() - t0:.1f} s)")
        for i, (mode, cb) in enumerate(order):
            if i == hook_at:
                between()
            if budget.spent():
                r = {"mode": mode, "cudnn_benchmark": cb, "skipped": "time budget spent"}
            else:
                try:
                    r = time_original_mode(torch, orig, a, device, mode, cb, table, budget)
                except Exception as e:  # noqa: BLE001 (OOM, an op this build lacks: report and go on)
                    r = {"mode": mode, "cudnn_benchmark": cb, "error": f"{type(e).__name__}: {str(e)[:400]}"}
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            report_original(r)
            results.append(r)
    if hook_at == len(order):
        between()
    return results


# ---------------------------------------------------------------------------------------------------
# per op: shapes (from attnas's bench logs or computed), PyTorch timings


SUBNETS = {
    # widths: stem, mb1..mb7, head; per stage: depth, kernel, expand (spec 1.1; AttentiveNAS-A0 = min)
    "max": dict(widths=[24, 24, 32, 40, 72, 128, 216, 224, 1984], depths=[2, 5, 6, 6, 8, 8, 2],
                expand=[1, 6, 6, 6, 6, 6, 6], kernel=5),
    "min": dict(widths=[16, 16, 24, 32, 64, 112, 192, 216, 1792], depths=[1, 3, 3, 3, 3, 3, 1],
                expand=[1, 4, 4, 4, 4, 6, 6], kernel=3),
}
STRIDES = [1, 2, 2, 2, 1, 2, 1]


def computed_shapes(name, r, batch):
    """The layers attnas's benches time, for a subnet at resolution r (used without bench logs)."""
    s = SUBNETS[name]
    w, k = s["widths"], s["kernel"]
    tag = f"{name} r{r}"
    dw, bn, pw = [], [], []
    size = r // 2
    bn.append(dict(subnet=tag, batch=batch, label=f"stem {size}x{size}x{w[0]}", side=size, c=w[0], swish=True))
    c_in = w[0]
    for st in range(7):
        t, c_out, stride = s["expand"][st], w[st + 1], STRIDES[st]
        out = -(-size // stride)
        # first block (stride, c_in * t) and a later block (stride 1, c_out * t)
        dw.append(dict(subnet=tag, batch=batch, label=f"mb{st + 1} c{c_in * t} {size}x{size} s{stride}",
                       c=c_in * t, side=size, stride=stride, k=k))
        if s["depths"][st] > 1:
            dw.append(dict(subnet=tag, batch=batch, label=f"mb{st + 1} c{c_out * t} {out}x{out} s1",
                           c=c_out * t, side=out, stride=1, k=k))
        if t > 1:
            bn.append(dict(subnet=tag, batch=batch, label=f"mb{st + 1} expand {out}x{out}x{c_out * t}", side=out,
                           c=c_out * t, swish=True))
        bn.append(dict(subnet=tag, batch=batch, label=f"mb{st + 1} project {out}x{out}x{c_out}", side=out, c=c_out,
                       swish=False))
        for b in range(s["depths"][st]):
            ci, sin = (c_in, size) if b == 0 else (c_out, out)
            mid = ci * t
            if t > 1:
                pw.append((f"mb{st + 1}.{b} expand", batch * sin * sin, ci, mid))
            pw.append((f"mb{st + 1}.{b} project", batch * out * out, mid, c_out))
            if ci != c_out:  # the shortcut's 1x1 conv (an identity or a bare avg-pool otherwise)
                pw.append((f"mb{st + 1}.{b} shortcut", batch * out * out, ci, c_out))
        c_in, size = c_out, out
    bn.append(dict(subnet=tag, batch=batch, label=f"head expand {size}x{size}x{6 * c_in}", side=size, c=6 * c_in,
                   swish=True))
    pw += [("head final_expand", batch * size * size, c_in, 6 * c_in), ("head feature_mix", batch, 6 * c_in, w[8]),
           ("classifier", batch, w[8], 1000)]
    seen, pws = set(), []
    for lbl, p, ci, co in pw:
        if (p, ci, co) not in seen:
            seen.add((p, ci, co))
            pws.append(dict(subnet=tag, batch=batch, label=lbl, p=p, ci=ci, co=co))
    dws = [d for i, d in enumerate(dw) if i == 0 or d["label"] != dw[i - 1]["label"]]
    ops = []
    for d in dws:
        ops += [dict(d, op="depthwise", form=f) for f in ("fwd", "bwd_input", "bwd_weight")]
    for d in bn:
        ops += [dict(d, op="bn", form=f) for f in ("train fwd", "train bwd", "eval fwd")]
    for d in pws:
        ops += [dict(d, op="pointwise", form=f) for f in ("fwd", "bwd_input", "bwd_weight")]
    return ops


DW_HEAD = re.compile(r"^(max|min) subnet, r (\d+), batch (\d+), k (\d+) \((.*)\):\s*$")
DW_LINE = re.compile(r"^\s+depthwise (fwd|bwd_input|bwd_weight)\s+(mb\d+) c(\d+) (\d+)x\d+ s(\d+)\s+([0-9.]+) ms")
BN_HEAD = re.compile(r"^(max|min) subnet, r (\d+), batch (\d+) on (.*)$")
BN_LINE = re.compile(r"^\s+(train fwd|train bwd|eval fwd)\s+((stem|mb\d+ expand|mb\d+ project|head expand) "
                     r"(\d+)x\d+x(\d+))\s+([0-9.]+) ms")
PW_HEAD = re.compile(r"^(max|min) subnet r (\d+), batch (\d+) \((.*)\):\s*$")
PW_LINE = re.compile(r"^\s+(fwd|bwd_input|bwd_weight)\s+(.+?)\s+P\s+(\d+)\s+(\d+)->(\d+)\s+([0-9.]+) ms")


def parse_bench_log(path, kind, want_gpu, subnets):
    """Entries (op dicts with attnas_ms) of one attnas bench log: the GPU sections (after its 'gpu roof'
    line) or the CPU ones, of the wanted subnets."""
    head = {"depthwise": DW_HEAD, "bn": BN_HEAD, "pointwise": PW_HEAD}[kind]
    line_re = {"depthwise": DW_LINE, "bn": BN_LINE, "pointwise": PW_LINE}[kind]
    on_gpu, cur, out = False, None, []
    with open(path, errors="replace") as fh:
        for line in fh:
            if line.startswith("gpu roof"):
                on_gpu = True
                continue
            m = head.match(line)
            if m:
                name, r, batch = m.group(1), int(m.group(2)), int(m.group(3))
                keep = on_gpu == want_gpu and (name, r) in subnets
                cur = dict(subnet=f"{name} r{r}", batch=batch, k=int(m.group(4)) if kind == "depthwise" else None)
                cur = cur if keep else None
                continue
            if cur is None:
                continue
            m = line_re.match(line)
            if not m:
                continue
            if kind == "depthwise":
                form, stage, c, side, stride, ms = m.groups()
                out.append(dict(op="depthwise", form=form, subnet=cur["subnet"], batch=cur["batch"],
                                label=f"{stage} c{c} {side}x{side} s{stride}", c=int(c), side=int(side),
                                stride=int(stride), k=cur["k"], attnas_ms=float(ms)))
            elif kind == "bn":
                form, label, what, side, c, ms = m.groups()
                out.append(dict(op="bn", form=form, subnet=cur["subnet"], batch=cur["batch"], label=label,
                                side=int(side), c=int(c), swish="project" not in what, attnas_ms=float(ms)))
            else:
                form, label, p, ci, co, ms = m.groups()
                out.append(dict(op="pointwise", form=form, subnet=cur["subnet"], batch=cur["batch"], label=label,
                                p=int(p), ci=int(ci), co=int(co), attnas_ms=float(ms)))
    return out


def op_shapes(a, want_gpu):
    """(op entries, notes): from the bench logs where they parse, computed otherwise."""
    notes, ops = [], []
    logs = {"depthwise": "bench-depthwise.log", "bn": "bench-batchnorm.log", "pointwise": "bench-pointwise.log"}
    for kind, fname in logs.items():
        got = []
        path = os.path.join(a.attnas_bench_logs, fname) if a.attnas_bench_logs else None
        if path and os.path.isfile(path):
            got = parse_bench_log(path, kind, want_gpu, set(a.ops_subnets))
            if not got:
                notes.append(f"{fname}: no {'GPU' if want_gpu else 'CPU'} lines of the subnets "
                             f"{a.ops_subnets} could be read; its text is printed below, PyTorch's times at the "
                             f"computed shapes beside it")
                with open(path, errors="replace") as fh:
                    notes.append("---- " + path + "\n" + fh.read()[-6000:] + "\n----")
        elif path:
            notes.append(f"{fname}: not in {a.attnas_bench_logs}; PyTorch only, at the computed shapes")
        if not got:
            batch = a.ops_batch or a.batch
            got = [o for n, r in a.ops_subnets for o in computed_shapes(n, r, batch) if o["op"] == kind]
        ops += got
    if not a.attnas_bench_logs:
        notes.append("no --attnas-bench-logs: PyTorch's per-op times only, at the computed shapes")
    return ops, notes


class OpTimer:
    def __init__(self, torch, device, warmup, repeats):
        self.torch, self.device, self.warmup, self.repeats = torch, device, warmup, repeats

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def time(self, fn):
        """Mean seconds per call after the warm-up, synchronised around the timed loop (as attnas's benches)."""
        for _ in range(self.warmup):
            fn()
        self.sync()
        t = time.perf_counter()
        for _ in range(self.repeats):
            fn()
        self.sync()
        return (time.perf_counter() - t) / self.repeats


def pytorch_op_variants(torch, orig, e, dtype, device):
    """{variant name: {form: callable}} for one layer at one precision; tensors made once."""
    F = torch.nn.functional
    cl = torch.channels_last
    conv_bwd = torch.ops.aten.convolution_backward
    rnd = lambda *shape: torch.randn(*shape, device=device, dtype=dtype)  # noqa: E731
    out = {}
    n = e["batch"]
    if e["op"] == "depthwise":
        c, s, k, st = e["c"], e["side"], e["k"], e["stride"]
        pad = k // 2
        for layout in ("nchw", "channels_last"):
            x = rnd(n, c, s, s)
            if layout == "channels_last":
                x = x.contiguous(memory_format=cl)
            w = rnd(c, 1, k, k)
            y = F.conv2d(x, w, None, st, pad, 1, c)
            dy = torch.randn_like(y)
            args = lambda mask, x=x, w=w, dy=dy: conv_bwd(dy, x, w, None, [st, st], [pad, pad], [1, 1], False,  # noqa: E731
                                                          [0, 0], c, mask)
            out[layout] = {
                "fwd": lambda x=x, w=w: F.conv2d(x, w, None, st, pad, 1, c),
                "bwd_input": lambda args=args: args([True, False, False]),
                "bwd_weight": lambda args=args: args([False, True, False]),
            }
    elif e["op"] == "bn":
        c, s = e["c"], e["side"]
        acts = {"identity": lambda t: t}
        if e["swish"]:
            acts = {"original swish": orig.nn_utils.build_activation("swish"), "F.silu": F.silu}
        for layout in ("nchw", "channels_last"):
            for act_name, act in acts.items():
                x = rnd(n, c, s, s)
                if layout == "channels_last":
                    x = x.contiguous(memory_format=cl)
                f32 = lambda: torch.randn(c, device=device)  # noqa: E731 (BN parameters stay fp32 under AMP)
                gamma, beta, rm, rv = f32(), f32(), torch.zeros(c, device=device), torch.ones(c, device=device)
                xg = x.detach().requires_grad_()
                gg, bg = gamma.clone().requires_grad_(), beta.clone().requires_grad_()
                # momentum 0: the original's BN (running stats passed, never moved)
                y = act(F.batch_norm(xg, rm, rv, gg, bg, True, 0.0, 1e-5))
                dy = torch.randn_like(y)

                def train_fwd(x=x, gamma=gamma, beta=beta, rm=rm, rv=rv, act=act):
                    with torch.no_grad():
                        return act(F.batch_norm(x, rm, rv, gamma, beta, True, 0.0, 1e-5))

                def eval_fwd(x=x, gamma=gamma, beta=beta, rm=rm, rv=rv, act=act):
                    with torch.no_grad():
                        return act(F.batch_norm(x, rm, rv, gamma, beta, False, 0.0, 1e-5))

                out[f"{layout}, {act_name}"] = {
                    "train fwd": train_fwd,
                    "train bwd": lambda y=y, xg=xg, gg=gg, bg=bg, dy=dy: torch.autograd.grad(
                        y, (xg, gg, bg), dy, retain_graph=True),
                    "eval fwd": eval_fwd,
                }
    else:  # pointwise: P = N H W pixels, ci -> co
        p, ci, co = e["p"], e["ci"], e["co"]
        hw = p // n
        h = int(round(math.sqrt(hw)))
        h, wd = (h, h) if h * h == hw else (hw, 1)
        x2, w2 = rnd(p, ci), rnd(co, ci)
        dy2, dw2 = rnd(p, co), rnd(co, ci)
        out["matmul"] = {
            "fwd": lambda: torch.mm(x2, w2.t()),
            "bwd_input": lambda: torch.mm(dy2, w2),
            "bwd_weight": lambda: dw2.addmm_(dy2.t(), x2),
        }
        for layout in ("nchw", "channels_last"):
            x = rnd(n, ci, h, wd)
            dy = rnd(n, co, h, wd)
            if layout == "channels_last":
                x, dy = x.contiguous(memory_format=cl), dy.contiguous(memory_format=cl)
            w = rnd(co, ci, 1, 1)
            args = lambda mask, x=x, w=w, dy=dy: conv_bwd(dy, x, w, None, [1, 1], [0, 0], [1, 1], False,  # noqa: E731
                                                          [0, 0], 1, mask)
            out[f"conv {layout}"] = {
                "fwd": lambda x=x, w=w: F.conv2d(x, w),
                "bwd_input": lambda args=args: args([True, False, False]),
                "bwd_weight": lambda args=args: args([False, True, False]),
            }
    return out


def ops_side(torch, orig, a, device, budget):
    cuda = device.type == "cuda"
    ops, notes = op_shapes(a, cuda)
    warm = a.op_warmup if a.op_warmup is not None else (3 if cuda else 1)
    reps = a.op_repeats if a.op_repeats is not None else (20 if cuda else 2)
    timer = OpTimer(torch, device, warm, reps)
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = False  # fp32 is plain FP32 here, as attnas's kernels
    torch.backends.cuda.matmul.allow_tf32 = False
    say(f"per op: {len(ops)} (op, form, layer) entries; PyTorch fp32 (TF32 off) and bf16, cudnn.benchmark on, "
        f"{warm} warm-up + {reps} timed calls each")
    for nline in notes:
        say("  note: " + nline)
    # group the forms of one layer: one set of tensors per (layer, precision, variant)
    groups = {}
    for e in ops:
        key = (e["op"], e["subnet"], e["batch"], e["label"], e.get("k"), e.get("p"), e.get("ci"), e.get("co"))
        groups.setdefault(key, []).append(e)
    skipped = 0
    try:
        for entries in groups.values():
            if budget.spent():
                skipped += len(entries)
                for e in entries:
                    e["skipped"] = "time budget spent"
                continue
            for prec, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
                try:
                    variants = pytorch_op_variants(torch, orig, entries[0], dtype, device)
                except Exception as ex:  # noqa: BLE001 (an op this build lacks, OOM)
                    for e in entries:
                        e.setdefault("errors", []).append(f"{prec}: {type(ex).__name__}: {str(ex)[:200]}")
                    continue
                for e in entries:
                    times = {}
                    for vname, forms in variants.items():
                        try:
                            times[vname] = timer.time(forms[e["form"]])
                        except Exception as ex:  # noqa: BLE001
                            e.setdefault("errors", []).append(f"{prec} {vname}: {type(ex).__name__}: {str(ex)[:200]}")
                    e[f"pytorch_{prec}_ms"] = {v: 1e3 * t for v, t in times.items()}
                    if times:
                        best = min(times, key=times.get)
                        e[f"best_{prec}"] = (best, 1e3 * times[best])
                del variants
            if cuda:
                torch.cuda.empty_cache()
            for e in entries:
                report_op(e)
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
    if skipped:
        say(f"  {skipped} per-op entries skipped: time budget spent")
    return ops, notes


def report_op(e):
    name = {"depthwise": "depthwise", "bn": "BN" + (" + swish" if e.get("swish") else ""), "pointwise": "1x1"}[e["op"]]
    parts = [f"  {name} {e['form']:<10} {e['subnet']:<9} b{e['batch']:<3} {e['label']:<26}"]
    att = e.get("attnas_ms")
    parts.append(f"attnas {att:9.3f} ms" if att is not None else "attnas         - ms")
    for prec in ("fp32", "bf16"):
        b = e.get(f"best_{prec}")
        if b:
            speed = f" ({b[1] / att:.2f}x)" if att else ""
            parts.append(f"PyTorch {prec} {b[1]:9.3f} ms [{b[0]}]{speed}")
        else:
            parts.append(f"PyTorch {prec} -")
    say("  ".join(parts) + ("  errors: " + "; ".join(e["errors"]) if e.get("errors") else ""))


def op_summary(ops):
    """Per (op, form, subnet): layers, summed attnas ms and summed best PyTorch ms (fp32, bf16), over the
    layers that have all three."""
    rows = {}
    for e in ops:
        if "best_fp32" not in e:
            continue
        key = (e["op"], e["form"], e["subnet"], e["batch"])
        r = rows.setdefault(key, dict(layers=0, attnas=0.0, fp32=0.0, bf16=0.0, have_attnas=True, have_bf16=True))
        r["layers"] += 1
        r["fp32"] += e["best_fp32"][1]
        if "best_bf16" in e:
            r["bf16"] += e["best_bf16"][1]
        else:
            r["have_bf16"] = False
        if e.get("attnas_ms") is not None:
            r["attnas"] += e["attnas_ms"]
        else:
            r["have_attnas"] = False
    return rows


OP_NAMES = {"depthwise": "depthwise conv", "bn": "BN (+ swish)", "pointwise": "1x1 conv (GEMM)"}


# ---------------------------------------------------------------------------------------------------
# report


def fmt(x, spec=".1f"):
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def ips(x):
    """images/s with 3 significant digits below 100 (CPU smoke tests), one decimal above."""
    return fmt(x, ".1f" if x is not None and x >= 100 else "#.3g")


def ratio_table(att, orig_runs):
    """Lines of attnas / PyTorch images/s for every measured pair, and the goal verdicts."""
    lines, verdicts = [], []
    att_ok = {p: r for p, r in att.items() if isinstance(r, dict) and "images_per_sec" in r}
    pt_ok = [r for r in orig_runs if "images_per_sec" in r]
    if not att_ok or not pt_ok:
        return ["(no ratios: one side has no measurement)"], verdicts
    for p, ar in att_ok.items():
        for r in pt_ok:
            x, x_mean = ar["images_per_sec"] / r["images_per_sec"], ar["images_per_sec_mean"] / r["images_per_sec_mean"]
            lines.append(f"  attnas {p} / PyTorch {MODE_TITLES[r['mode']]} (cudnn.benchmark "
                         f"{'on' if r['cudnn_benchmark'] else 'off'}): {x:.2f}x (means: {x_mean:.2f}x)")
    best_p = max(att_ok, key=lambda p: att_ok[p]["images_per_sec"])
    best_att = att_ok[best_p]["images_per_sec"]
    for mode, goal in GOALS:
        cands = [r for r in pt_ok if r["mode"] == mode]
        if not cands:
            verdicts.append(f"  goal attnas >= {goal:g}x PyTorch {MODE_TITLES[mode]}: not measured")
            continue
        fastest = max(cands, key=lambda r: r["images_per_sec"])
        x = best_att / fastest["images_per_sec"]
        met = "MET" if x >= goal else "NOT MET"
        verdicts.append(f"  goal attnas >= {goal:g}x PyTorch {MODE_TITLES[mode]}: {x:.2f}x ({met};"
                        f" attnas {best_p} {ips(best_att)} images/s against PyTorch's faster setting, cudnn.benchmark "
                        f"{'on' if fastest['cudnn_benchmark'] else 'off'}, {ips(fastest['images_per_sec'])} images/s)")
    return lines, verdicts


def markdown(meta, a, att, orig_runs, ops):
    out = ["<!-- rows for docs/gpu-runs.md, section Side by side: paste each row under its table's header -->"]
    if orig_runs or att:
        out += step_rows(meta, a, att, orig_runs)
    rows = op_summary(ops)
    if rows:
        out.append("\n### Per op (ms summed over the layers; PyTorch's fastest layout; speed-up = PyTorch ms / "
                   "attnas ms)\n")
        out.append("| date | card | commit | op | form | subnet, batch | layers | attnas fp32 ms | PyTorch fp32 ms | "
                   "PyTorch bf16 ms | speed-up vs fp32 | speed-up vs bf16 |")
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for (op, form, subnet, batch), r in rows.items():
            att_ms = r["attnas"] if r["have_attnas"] else None
            bf = r["bf16"] if r["have_bf16"] else None
            s32 = f"{r['fp32'] / att_ms:.2f}x" if att_ms else "-"
            s16 = f"{bf / att_ms:.2f}x" if att_ms and bf else "-"
            out.append(f"| {meta['date']} | {meta['card']} | {meta['commit']} | {OP_NAMES[op]} | {form} | {subnet}, "
                       f"b{batch} | {r['layers']} | {fmt(att_ms, '.3f')} | {r['fp32']:.3f} | {fmt(bf, '.3f')} | "
                       f"{s32} | {s16} |")
    return "\n".join(out) + "\n"


def step_rows(meta, a, att, orig_runs):
    date, card, commit = meta["date"], meta["card"], meta["commit"]
    out = ["### The training step (images/s, median step; ratios from attnas's faster precision)\n"]
    out.append("| date | card | commit | setup | attnas fp32 | attnas bf16 | PyTorch fp32 | PyTorch AMP bf16 | "
               "PyTorch AMP bf16 + CL | attnas / AMP+CL (goal 2x) | attnas / fp32 (goal 4x) | notes |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rate = lambda r: r.get("images_per_sec") if isinstance(r, dict) else None  # noqa: E731
    a32, a16 = rate(att.get("fp32", {})), rate(att.get("bf16", {}))
    best_att = max([x for x in (a32, a16) if x], default=None)
    for cb in sorted({r["cudnn_benchmark"] for r in orig_runs}) or [None]:
        runs = {r["mode"]: r for r in orig_runs if r["cudnn_benchmark"] == cb}
        pt = {m: rate(runs.get(m, {})) for m in MODES}
        rat = {m: f"{best_att / pt[m]:.2f}x" if best_att and pt[m] else "-" for m in MODES}
        bf16_cell = ips(a16) if a16 else ("n/a" if "unavailable" in att.get("bf16", {}) else "-")
        setting = "PyTorch not measured" if cb is None else f"cudnn.benchmark {'on' if cb else 'off'}"
        notes = f"torch {meta['torch']}, {setting}, fp32 TF32 {meta['tf32']}, {a.steps} steps after {a.warmup} warm-up"
        out.append(f"| {date} | {card} | {commit} | b{a.batch} k{a.k} {a.resolution}px | {ips(a32)} | {bf16_cell} | "
                   f"{ips(pt['fp32'])} | {ips(pt['amp-bf16'])} | {ips(pt['amp-bf16-cl'])} | {rat['amp-bf16-cl']} | "
                   f"{rat['fp32']} | {notes} |")
    return out


# ---------------------------------------------------------------------------------------------------


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        root = check_attentivenas(a.attentivenas)
        config = a.config or os.path.join(root, DEFAULT_CONFIG)
        if not os.path.isfile(config):
            raise UsageError(f"--config {config}: no such file (the checkout's training config). " + BRING_IT + ".")
        try:
            import torch
        except ImportError as e:
            raise UsageError(f"PyTorch is not importable by {sys.executable} ({e}); the original's side needs it "
                             "(the GPU machines have it; for a CPU smoke test: pip install torch)") from None
        try:
            device = torch.device(a.device)
        except RuntimeError as e:
            raise UsageError(f"--device {a.device}: {e}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {a.device}: PyTorch sees no CUDA device (torch {torch.__version__}); pass "
                             "--device cpu for a smoke test")
        if device.type not in ("cuda", "cpu"):
            raise UsageError(f"--device {a.device}: use cuda, cuda:N or cpu")
    except UsageError as e:
        print(f"side_by_side.py: {e}", file=sys.stderr)
        return 2

    budget = Budget(a.budget_s)
    cuda = device.type == "cuda"
    if not cuda and a.cudnn_benchmark != "off":
        a.cudnn_benchmark = "off"  # no cuDNN on the CPU: one setting to time
    if cuda:
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        torch.cuda.set_device(device)
    if a.tf32 == "off":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    card = torch.cuda.get_device_name(device) if cuda else "cpu"
    tf32 = (f"cuDNN {'on' if torch.backends.cudnn.allow_tf32 else 'off'}, matmul "
            f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'}") if cuda else "n/a (CPU)"
    attnas_bin = find_attnas(a.attnas)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "card": card,
        "commit": find_commit(a.commit, attnas_bin),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "tf32": tf32,
        "python": sys.version.split()[0],
        "args": {k: v for k, v in vars(a).items()},
    }
    say(f"side by side on {card}: batch {a.batch}, BestUp-{a.k}, input {a.resolution}px, {a.warmup} warm-up + "
        f"{a.steps} timed steps; torch {torch.__version__}"
        + (f", cuDNN {meta['cudnn']}" if cuda else "") + f"; fp32 TF32: {tf32}"
        + (f"; budget {a.budget_s:.0f} s" if a.budget_s > 0 else ""))

    result = {"meta": meta, "attnas": {}, "pytorch_step": [], "ops": [], "op_notes": []}
    failed = []
    try:
        orig = Original(root, config)
    except Exception as e:  # the checkout does not import with this torch
        print(f"side_by_side.py: importing the original from {root} failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1

    if not a.no_step:
        result["attnas"] = attnas_side(a, attnas_bin, a.device, budget)
        if "error" in result["attnas"]:
            failed.append("attnas: " + result["attnas"]["error"])
        for p in ("fp32", "bf16"):
            r = result["attnas"].get(p, {})
            if "error" in r:
                failed.append(f"attnas {p}: {r['error']}")

    def run_ops():
        if a.no_ops:
            return
        try:
            ops, notes = ops_side(torch, orig, a, device, budget)
        except Exception as e:  # noqa: BLE001
            failed.append(f"per op: {type(e).__name__}: {e}")
            say(f"per op: FAILED: {type(e).__name__}: {e}")
            return
        result["ops"], result["op_notes"] = ops, notes
        for e in ops:
            for err in e.get("errors", []):
                failed.append(f"per op {e['op']} {e['form']} {e['subnet']} {e['label']}: {err}")

    if not a.no_step:
        say("original AttentiveNAS step (PyTorch):")

        def between():
            run_ops()
            if a.cudnn_benchmark != "off":
                say("original AttentiveNAS step (PyTorch), cudnn.benchmark on:")

        result["pytorch_step"] = original_side(torch, orig, a, device, budget, between)
        for r in result["pytorch_step"]:
            if "error" in r:
                failed.append(f"PyTorch {r['mode']} cudnn.benchmark {r['cudnn_benchmark']}: {r['error']}")
    else:
        run_ops()

    say("")
    lines, verdicts = ratio_table(result["attnas"], result["pytorch_step"]) if not a.no_step else ([], [])
    if not a.no_step:
        say("== ratios (attnas images/s / PyTorch images/s, median steps)")
        for ln in lines + verdicts:
            say(ln)
    rows = op_summary(result["ops"])
    if rows:
        say("== per op (summed over layers; speed-up = PyTorch ms / attnas ms, PyTorch's fastest layout)")
        for (op, form, subnet, batch), r in rows.items():
            att_ms = r["attnas"] if r["have_attnas"] else None
            bf = r["bf16"] if r["have_bf16"] else None
            s = "no attnas time"
            if att_ms:
                s = f"{r['fp32'] / att_ms:.2f}x vs fp32, " + (f"{bf / att_ms:.2f}x vs bf16" if bf else "-")
            say(f"  {OP_NAMES[op]:<16} {form:<10} {subnet}, b{batch}: {r['layers']} layers, attnas "
                f"{fmt(att_ms, '.3f')} ms, PyTorch fp32 {r['fp32']:.3f} ms, bf16 {fmt(bf, '.3f')} ms: {s}")
    md = markdown(meta, a, result["attnas"], result["pytorch_step"], result["ops"])
    say("")
    say("== rows for docs/gpu-runs.md")
    say(md)
    result["ratios"], result["goals"], result["failed"] = lines, verdicts, failed
    if a.out_md:
        with open(a.out_md, "w") as fh:
            fh.write(md)
    if a.json:
        with open(a.json, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
    if failed:
        say(f"{len(failed)} measurement(s) failed:")
        for f in failed[:20]:
            say("  " + f)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
