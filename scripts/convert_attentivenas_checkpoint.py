#!/usr/bin/env python3
"""Convert an official AttentiveNAS or AlphaNet supernet checkpoint into attnas's safetensors.

    convert_attentivenas_checkpoint.py IN OUT.safetensors [--space attentivenas]

IN is the released `attentive_nas_pretrained.pth.tar` (a dict whose 'state_dict' holds the supernet,
keys prefixed `module.`), any .pth/.pt/.tar holding such a dict or a bare state dict, or a .safetensors
or .npz file with the same names. Reading .pth files needs PyTorch; safetensors and npz do not.

attnas stores its supernet under AttentiveNAS's own state-dict names, in PyTorch's shapes and layout
(src/nn/params.rs), so the conversion is: strip `module.`, drop what attnas does not keep
(`num_batches_tracked`, the unused `bn_tracking` buffers, anything else not in the space's table; all
listed), convert to float32, check that every parameter of the space is there with its exact shape, and
write OUT with metadata {format: attnas-supernet/1, source, space, space_yaml}. `attnas eval --ckpt OUT`
then finds the space from the file itself.

The expected names and shapes come from `attnas params --config SPACE --json`. The attnas binary is
--attnas, else $ATTNAS_BIN, else `attnas` on PATH, else target/{release,debug}/attnas in this repository;
--params-json FILE gives that JSON instead.

Needs numpy and safetensors (scripts/setup-python-tools.sh puts them in .venv-tools/). Exit codes: 0 done,
2 bad input (unreadable file, missing tensor, wrong shape: the message names the tensor and both shapes),
1 anything else.
"""

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FORMAT = "attnas-supernet/1"
TORCH_SUFFIXES = (".pth", ".pth.tar", ".pt", ".tar", ".ckpt", ".bin")
# Where a training checkpoint keeps the model's state dict, in the order tried.
STATE_DICT_KEYS = ("state_dict", "model", "model_state_dict", "net")
# Errors printed before the rest are summarized in one line.
MAX_ERRORS = 12


class InputError(Exception):
    """Bad input or usage: exit code 2."""


def need_python_packages():
    try:
        import numpy  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as e:
        raise InputError(
            f"{e.name} is not installed for {sys.executable}; run scripts/setup-python-tools.sh and use "
            ".venv-tools/bin/python (or pip install numpy safetensors)"
        ) from e


# ---------------------------------------------------------------------------------------------- expected


def find_attnas(explicit):
    candidates = [explicit, os.environ.get("ATTNAS_BIN"), shutil.which("attnas")]
    candidates += [str(REPO / "target" / p / "attnas") for p in ("release", "debug")]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise InputError(
        "attnas binary not found (tried --attnas, $ATTNAS_BIN, PATH, target/release, target/debug); "
        "build it with `cargo build --release` or pass --params-json"
    )


def expected_tensors(args):
    """The space's table from `attnas params --json`: (doc, {name: entry})."""
    if args.params_json:
        try:
            text = Path(args.params_json).read_text()
        except OSError as e:
            raise InputError(f"{args.params_json}: {e.strerror}") from e
    else:
        attnas = find_attnas(args.attnas)
        run = subprocess.run(
            [attnas, "params", "--config", args.space, "--json"], capture_output=True, text=True, check=False
        )
        if run.returncode != 0:
            msg = run.stderr.strip().removeprefix("error: ") or f"exit code {run.returncode}"
            if run.returncode == 2:
                raise InputError(f"--space {args.space}: {msg}")
            raise RuntimeError(f"`{attnas} params --config {args.space} --json` failed: {msg}")
        text = run.stdout
    try:
        doc = json.loads(text)
        table = {t["name"]: t for t in doc["tensors"]}
    except (ValueError, KeyError, TypeError) as e:
        raise InputError(f"the parameter list is not `attnas params --json` output ({e})") from e
    return doc, table


# ------------------------------------------------------------------------------------------------ reading


def read_bf16_tensor(path, name):
    """A BF16 tensor of a safetensors file as float32 (numpy has no bfloat16)."""
    import numpy as np

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        info = header[name]
        if info["dtype"] != "BF16":
            raise InputError(f"{path}: tensor '{name}' has dtype {info['dtype']}, which this converter cannot read")
        start, end = info["data_offsets"]
        f.seek(8 + n + start)
        raw = np.frombuffer(f.read(end - start), dtype="<u2")
    return (raw.astype(np.uint32) << 16).view(np.float32).reshape(info["shape"])


def read_safetensors(path):
    from safetensors import safe_open

    out = {}
    try:
        with safe_open(str(path), framework="np") as f:
            for name in f.keys():
                try:
                    out[name] = f.get_tensor(name)
                except TypeError:
                    out[name] = read_bf16_tensor(path, name)  # the one dtype numpy cannot hold
    except InputError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise InputError(f"{path}: not a readable safetensors file ({e})") from e
    return out, {}


def read_npz(path):
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, {}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable .npz file ({e})") from e


def unwrap_state_dict(obj, path):
    """The state dict inside a training checkpoint (or the object itself when it is one)."""
    import torch

    def is_tensor_dict(d):
        return isinstance(d, dict) and d and all(torch.is_tensor(v) for v in d.values())

    if is_tensor_dict(obj):
        return obj, None
    if isinstance(obj, dict):
        for key in STATE_DICT_KEYS:
            inner = obj.get(key)
            if isinstance(inner, dict):
                tensors = {k: v for k, v in inner.items() if torch.is_tensor(v)}
                if tensors:
                    return tensors, key
        keys = ", ".join(map(str, list(obj)[:12]))
        raise InputError(f"{path}: no state dict found (top-level keys: {keys}); expected one of {STATE_DICT_KEYS}")
    raise InputError(f"{path}: holds a {type(obj).__name__}, not a state dict or a checkpoint dict")


def read_torch(path, allow_pickle):
    try:
        import torch
    except ImportError as e:
        raise InputError(
            f"{path}: reading PyTorch files needs PyTorch (pip install torch --index-url "
            "https://download.pytorch.org/whl/cpu); or give a .safetensors/.npz with the same names"
        ) from e
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except TypeError:  # PyTorch < 1.13: no weights_only, every load unpickles arbitrary objects
        if not allow_pickle:
            raise InputError(
                f"{path}: this PyTorch cannot load weights-only; pass --allow-pickle if you trust the file"
            ) from None
        obj = torch.load(str(path), map_location="cpu")
    except Exception as e:  # pickle.UnpicklingError, RuntimeError (corrupt zip), ...
        if not allow_pickle:
            raise InputError(
                f"{path}: weights-only loading failed ({str(e).splitlines()[0]}); the file holds other Python "
                "objects (optimizer, args). Pass --allow-pickle to unpickle it fully, only if you trust the file"
            ) from e
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as e2:
            raise InputError(f"{path}: not a readable PyTorch file ({e2})") from e2
    state, key = unwrap_state_dict(obj, path)
    meta = {}
    if key is not None:
        meta["source_key"] = key
        if isinstance(obj.get("epoch"), int):
            meta["source_epoch"] = str(obj["epoch"])
    out = {}
    for name, t in state.items():
        t = t.detach().cpu()
        out[name] = (t.float() if t.is_floating_point() else t).numpy()
    return out, meta


def read_input(path, allow_pickle):
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{path}: no such file")
    name = p.name.lower()
    if name.endswith(".safetensors"):
        return read_safetensors(p) + ("safetensors",)
    if name.endswith(".npz"):
        return read_npz(p) + ("npz",)
    if name.endswith(TORCH_SUFFIXES):
        return read_torch(p, allow_pickle) + ("pytorch",)
    raise InputError(f"{path}: unknown format; give a .pth/.pth.tar/.pt (PyTorch), .safetensors or .npz file")


# --------------------------------------------------------------------------------------------- converting


def strip_prefix(name):
    while name.startswith("module."):
        name = name[len("module.") :]
    return name


def drop_reason(name):
    if name.endswith("num_batches_tracked"):
        return "num_batches_tracked"
    if "bn_tracking" in name.split("."):
        return "bn_tracking"
    return "not in the table"


def shape_str(shape):
    return "[" + ", ".join(str(int(d)) for d in shape) + "]"


def convert(source, table, space):
    """Renames, drops and checks; returns (kept {name: float32 array}, dropped [(name, reason)])."""
    import numpy as np

    kept, origin, dropped, errors, faulty = {}, {}, [], [], set()
    for src_name in sorted(source):
        arr = source[src_name]
        name = strip_prefix(src_name)
        entry = table.get(name)
        if entry is None:
            dropped.append((src_name, drop_reason(name)))
            continue
        if name in kept:
            errors.append(f"tensor '{name}' appears twice: as '{origin[name]}' and as '{src_name}'")
            faulty.add(name)
            continue
        want = tuple(entry["shape"])
        if tuple(arr.shape) != want:
            errors.append(
                f"tensor '{src_name}' has shape {shape_str(arr.shape)} but space '{space}' needs {shape_str(want)}"
            )
            faulty.add(name)
            continue
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            errors.append(f"tensor '{src_name}' has dtype {arr.dtype}, not a number type")
            faulty.add(name)
            continue
        with np.errstate(over="ignore"):
            f32 = np.ascontiguousarray(arr, dtype=np.float32)
        bad = int(np.size(f32) - np.count_nonzero(np.isfinite(f32)))
        if bad:
            errors.append(f"tensor '{src_name}' has {bad} non-finite values (NaN/Inf, or too large for float32)")
            faulty.add(name)
            continue
        kept[name], origin[name] = f32, src_name
    missing = [n for n, e in table.items() if e["kind"] == "param" and n not in kept and n not in faulty]
    if missing:
        listed = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
        errors.append(
            f"{len(missing)} parameters of space '{space}' are missing: {listed} "
            "(is this a checkpoint of another search space? pick it with --space)"
        )
    if len(errors) > MAX_ERRORS:
        head, tail = errors[: MAX_ERRORS - 1], errors[-1:] if missing else []
        hidden = len(errors) - len(head) - len(tail)
        note = f"... and {hidden} more (is this a checkpoint of another search space? pick it with --space)"
        errors = head + [note] + tail
    if errors:
        raise InputError("\n".join(errors))
    return kept, dropped


def write_output(path, tensors, metadata):
    from safetensors.numpy import save_file

    out = Path(path)
    if not out.parent.is_dir():
        raise InputError(f"{path}: folder {out.parent} does not exist")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def summarize_dropped(dropped, verbose):
    if not dropped:
        return "dropped nothing"
    counts = {}
    for _, reason in dropped:
        counts[reason] = counts.get(reason, 0) + 1
    parts = [f"{n} {r}" for r, n in sorted(counts.items())]
    line = f"dropped {len(dropped)} tensors attnas does not keep: " + ", ".join(parts)
    unknown = [n for n, r in dropped if r == "not in the table"]
    shown = [n for n, _ in dropped] if verbose else unknown[:20]
    if shown:
        more = "" if verbose or len(unknown) <= 20 else f"\n  ... and {len(unknown) - 20} more (-v lists all)"
        line += "\n" + "\n".join(f"  {n}" for n in shown) + more
    return line


def main(argv=None):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("input", metavar="IN", help=".pth/.pth.tar/.pt (PyTorch), .safetensors or .npz checkpoint")
    ap.add_argument("output", metavar="OUT.safetensors", help="the converted supernet (written atomically)")
    ap.add_argument("--space", default="attentivenas", help="attentivenas (default), tiny, or a space YAML file")
    ap.add_argument("--attnas", help="the attnas binary (default: $ATTNAS_BIN, PATH, target/{release,debug})")
    ap.add_argument("--params-json", help="`attnas params --config SPACE --json` output, instead of running attnas")
    ap.add_argument("--allow-pickle", action="store_true",
                    help="if weights-only loading of a .pth fails, unpickle it fully (runs code from the file)")
    ap.add_argument("-v", "--verbose", action="store_true", help="list every dropped tensor")
    args = ap.parse_args(argv)
    try:
        if not args.output.endswith(".safetensors"):
            raise InputError(f"{args.output}: the output must be a .safetensors file")
        need_python_packages()
        doc, table = expected_tensors(args)
        space = doc.get("space", args.space)
        source, src_meta, kind = read_input(args.input, args.allow_pickle)
        print(f"read {len(source)} tensors from {args.input} ({kind})")
        kept, dropped = convert(source, table, space)
        print(summarize_dropped(dropped, args.verbose))
        buffers_missing = [n for n, e in table.items() if e["kind"] == "buffer" and n not in kept]
        if buffers_missing:
            print(f"note: {len(buffers_missing)} BN running statistics are absent (first: {buffers_missing[0]}); "
                  "they start at mean 0, var 1 until BN recalibration")
        metadata = {
            "format": FORMAT,
            "source": os.path.basename(args.input),
            "source_format": kind,
            "space": space,
            "space_yaml": doc.get("space_yaml", ""),
            "layout": "pytorch (AttentiveNAS state-dict names and shapes)",
            "converter": "scripts/convert_attentivenas_checkpoint.py",
            **src_meta,
        }
        write_output(args.output, kept, metadata)
        n_params = sum(1 for n in kept if table[n]["kind"] == "param")
        print(f"wrote {args.output}: {len(kept)} tensors ({n_params} parameters, {len(kept) - n_params} buffers), "
              f"space {space}")
        return 0
    except InputError as e:
        for line in str(e).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one line, not a traceback
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
