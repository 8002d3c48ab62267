//! Importing an official AttentiveNAS checkpoint (issue #8, part 4) without PyTorch: a script writes a
//! safetensors file laid out like `attentive_nas_pretrained.pth.tar`'s state dict for the tiny space
//! (`module.` names, PyTorch shapes, random f32 and f16 values, `num_batches_tracked` and `bn_tracking`
//! extras); `scripts/convert_attentivenas_checkpoint.py` converts it; the library loads the result and
//! every tensor equals the fake's value (names, shapes and layouts map one to one), and a forward of the
//! min subnet gives finite logits. Bad shapes and missing tensors exit 2 naming the tensor.
//!
//! Also `attnas params --json`, the converter's source of names and shapes, against `ParamTable`.
//!
//! The Python tests need `.venv-tools/` (scripts/setup-python-tools.sh); without it they print one
//! `skipped:` line, unless `REQUIRE_PYTHON_TOOLS=1` (CI), where they fail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use attnas::backend::cpu::CpuBackend;
use attnas::backend::{Arena, Backend};
use attnas::checkpoint::read_safetensors_all;
use attnas::eval::load_supernet;
use attnas::nn::{activation_arena_len, ForwardOptions, ParamTable};
use attnas::space::Space;
use attnas::testing::random_vec;

/// The binary under test: `ATTNAS_BIN` (set by the GPU bundle's run.sh) or the one cargo built.
fn attnas_bin() -> String {
    std::env::var("ATTNAS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attnas").to_string())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `.venv-tools/bin/python`, or None after printing why the test is skipped.
fn tools_python(test: &str) -> Option<PathBuf> {
    let py = repo().join(".venv-tools/bin/python");
    if py.is_file() {
        return Some(py);
    }
    if std::env::var("REQUIRE_PYTHON_TOOLS").is_ok_and(|v| v == "1") {
        panic!("REQUIRE_PYTHON_TOOLS=1 but {} is missing: run scripts/setup-python-tools.sh", py.display());
    }
    println!("skipped: {test}: no .venv-tools (run scripts/setup-python-tools.sh)");
    None
}

fn run_script(py: &Path, script: &str, args: &[&str]) -> Output {
    Command::new(py)
        .arg(repo().join("scripts").join(script))
        .args(args)
        .env("ATTNAS_BIN", attnas_bin())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn tiny_yaml() -> String {
    repo().join("configs/tiny.yaml").display().to_string()
}

/// Writes a fake checkpoint; `extra` goes to make_fake_attentivenas_checkpoint.py.
fn make_fake(py: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec![out.to_str().unwrap(), "--space", "tiny", "--seed", "7"];
    args.extend_from_slice(extra);
    let o = run_script(py, "make_fake_attentivenas_checkpoint.py", &args);
    assert!(o.status.success(), "fake checkpoint: {}{}", text(&o.stdout), text(&o.stderr));
}

fn convert(py: &Path, input: &Path, out: &Path) -> Output {
    let space = tiny_yaml();
    run_script(
        py,
        "convert_attentivenas_checkpoint.py",
        &[input.to_str().unwrap(), out.to_str().unwrap(), "--space", &space],
    )
}

#[test]
fn params_json_lists_the_table() {
    let out = Command::new(attnas_bin()).args(["params", "--config", "tiny", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let space = Space::builtin("tiny").unwrap();
    let table = ParamTable::new(&space).unwrap();
    assert_eq!(doc["space"], "tiny");
    assert_eq!(Space::from_yaml(doc["space_yaml"].as_str().unwrap(), "json").unwrap().name, "tiny");
    assert_eq!(doc["num_params"].as_u64().unwrap() as usize, table.num_params());
    let tensors = doc["tensors"].as_array().unwrap();
    let want: Vec<_> =
        table.params.iter().map(|p| (p, "param")).chain(table.buffers.iter().map(|p| (p, "buffer"))).collect();
    assert_eq!(tensors.len(), want.len());
    for (t, (p, kind)) in tensors.iter().zip(&want) {
        assert_eq!(t["name"], p.name.as_str());
        assert_eq!(t["kind"], *kind, "{}", p.name);
        let shape: Vec<usize> = serde_json::from_value(t["shape"].clone()).unwrap();
        assert_eq!(shape, p.torch_shape, "{}", p.name);
        let ours: Vec<usize> = serde_json::from_value(t["our_shape"].clone()).unwrap();
        assert_eq!(ours, p.shape, "{}", p.name);
    }
    // Plain form: a header, one line per tensor, a summary; a bad space exits 2 with one line.
    let out = Command::new(attnas_bin()).args(["params", "--config", &tiny_yaml()]).output().unwrap();
    assert!(out.status.success());
    let plain = text(&out.stdout);
    assert_eq!(plain.lines().count(), want.len() + 2, "{plain}");
    let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
    let line = "blocks.3.mobile_inverted_conv.depth_conv.se.fc.reduce.weight param [24, 72, 1, 1] plain";
    assert!(plain.lines().any(|l| words(l) == line), "{plain}");
    let out = Command::new(attnas_bin()).args(["params", "--config", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stderr).lines().count(), 1);
}

#[test]
fn converted_fake_checkpoint_loads_one_to_one_and_runs() {
    let Some(py) = tools_python("converted_fake_checkpoint_loads_one_to_one_and_runs") else { return };
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("attentive_nas_fake.safetensors");
    let out = dir.path().join("imported.safetensors");
    make_fake(&py, &fake, &[]);

    let o = convert(&py, &fake, &out);
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "convert: {stdout}{}", text(&o.stderr));
    // Per BN the fake has num_batches_tracked and bn_tracking.0.{running_mean,running_var,num_batches_tracked}.
    let space = Space::builtin("tiny").unwrap();
    let table = ParamTable::new(&space).unwrap();
    let bns = table.buffers.len() / 2;
    assert!(stdout.contains(&format!("{} num_batches_tracked", 2 * bns)), "{stdout}");
    assert!(stdout.contains(&format!("{} bn_tracking", 2 * bns)), "{stdout}");
    assert!(stdout.contains(&format!(
        "{} tensors ({} parameters",
        table.params.len() + table.buffers.len(),
        table.params.len()
    )));

    // The fake's values by stripped name (f16 tensors widened exactly, int64 extras left apart).
    let fake_contents = read_safetensors_all(&fake).unwrap();
    assert_eq!(fake_contents.skipped.len(), 2 * bns, "int64 num_batches_tracked");
    let fake_vals: HashMap<String, (Vec<usize>, Vec<f32>)> = fake_contents
        .tensors
        .into_iter()
        .map(|t| (t.name.strip_prefix("module.").unwrap().to_string(), (t.shape, t.data)))
        .collect();

    let converted = read_safetensors_all(&out).unwrap();
    assert_eq!(converted.metadata["format"], "attnas-supernet/1");
    assert_eq!(converted.metadata["space"], "tiny");
    assert!(converted.tensors.iter().all(|t| !t.name.starts_with("module.") && !t.name.contains("bn_tracking")));

    let b = CpuBackend::new();
    let loaded = load_supernet(&b, &out, Some("tiny")).unwrap();
    let named = loaded.net.to_named(&b, false).unwrap();
    assert_eq!(named.len(), table.params.len() + table.buffers.len());
    let mut f16_like = 0;
    for t in &named {
        let (shape, data) = fake_vals.get(&t.name).unwrap_or_else(|| panic!("{} not in the fake", t.name));
        assert_eq!(&t.shape, shape, "{}", t.name);
        let got: Vec<u32> = t.data.iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = data.iter().map(|v| v.to_bits()).collect();
        assert!(got == want, "{}: loaded values differ from the fake checkpoint's", t.name);
        // f16 values have at most 11 significant bits: the low 13 mantissa bits are zero.
        if data.iter().all(|v| v.to_bits() & 0x1fff == 0) {
            f16_like += 1;
        }
    }
    assert!(f16_like >= named.len() / 4, "the fake should store about a third of its tensors as f16");

    // Without --config the space comes from the converted file's metadata.
    let again = load_supernet(&b, &out, None).unwrap();
    assert_eq!(again.net.space.name, "tiny");

    // The min subnet runs on the imported weights (eval mode: the imported running statistics).
    let (n, side) = (4, 28);
    let len = activation_arena_len(&space, n, side, false, attnas::backend::Dtype::F32).unwrap();
    let mut arena = Arena::new(&b, "activations", len).unwrap();
    let input = arena.alloc(n * side * side * 3).unwrap();
    b.upload(input, &random_vec(11, n * side * side * 3, -1.0, 1.0)).unwrap();
    let tape = loaded.net.forward(&b, &space.min_arch(), input, n, side, ForwardOptions::eval(), &mut arena).unwrap();
    let logits = b.download(tape.head.logits).unwrap();
    assert_eq!(logits.len(), n * space.num_classes);
    assert!(logits.iter().all(|v| v.is_finite()), "{logits:?}");
    assert!(logits.iter().any(|&v| v != logits[0]), "logits all equal: {logits:?}");
}

#[test]
fn wrong_shape_or_missing_tensor_exits_2_naming_it() {
    let Some(py) = tools_python("wrong_shape_or_missing_tensor_exits_2_naming_it") else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("imported.safetensors");
    let bad = "blocks.3.mobile_inverted_conv.point_linear.conv.conv.weight";

    // npz input too: the same names and shapes without safetensors.
    let fake = dir.path().join("wrong_shape.npz");
    make_fake(&py, &fake, &["--wrong-shape", bad]);
    let o = convert(&py, &fake, &out);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("'module.{bad}' has shape [40, 72, 1, 1] but space 'tiny' needs [32, 72, 1, 1]")),
        "{err}"
    );
    assert!(!out.exists(), "no output on error");

    let missing = "classifier.linear.linear.bias";
    let fake = dir.path().join("missing.safetensors");
    make_fake(&py, &fake, &["--omit", missing]);
    let o = convert(&py, &fake, &out);
    let err = text(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("1 parameters of space 'tiny' are missing: classifier.linear.linear.bias"), "{err}");
    assert!(!out.exists(), "no output on error");

    // A .pth without PyTorch installed, or no such file: exit 2 with the reason.
    let o = convert(&py, &dir.path().join("absent.pth.tar"), &out);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("no such file"), "{}", text(&o.stderr));
}
