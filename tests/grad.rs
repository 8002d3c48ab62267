//! `attnas grad` (`train::grad::subnet_gradients` and the CLI): the dumped loss and gradients of one
//! train-mode forward of a subnet on a given batch.
//!
//! - Library, CPU: every parameter is present under its state-dict name with its PyTorch shape; elements
//!   outside the subnet's active slices are exactly 0 and every active tensor has a non-zero gradient;
//!   sampled elements of every tensor kind (stem, expand, depthwise incl. kernel-3 taps of a 5 x 5 weight,
//!   SE, project, BN, shortcut conv, head, classifier) match central finite differences of the dumped loss
//!   itself (the batch-mean label-smoothed CE, eps 0.1), perturbing the weight in PyTorch layout, on an arch
//!   at resolution 26 whose stride-2 blocks see odd sizes. Step 1e-2 in f32 and tolerance 2e-4 + 2e-2 |g|:
//!   the loss (~2.3) is an f32 mean, so its rounding (~2e-7) puts ~1e-5 of noise on the quotient, and the
//!   truncation O(h^2 L''') is largest through batch-statistics BN on few pixels; a wrong layout or a
//!   missing 1 / n is off by far more.
//! - CLI: the file written from .npy inputs equals the library's result on the same weights (loss as
//!   tensor `loss` [1]); inputs at another resolution, labels of another length or out of range, float
//!   labels and a checkpoint of another space each fail with exit code 2 and a message naming the file and
//!   both shapes. Run time: about 2 s (debug build).

mod nn_common;

use std::process::Command;

use attnas::backend::cpu::CpuBackend;
use attnas::checkpoint::{read_safetensors, write_safetensors, TensorRecord};
use attnas::nn::NamedTensor;
use attnas::testing::random_vec;
use attnas::train::grad::subnet_gradients;
use attnas::util::npy::npy_bytes;
use nn_common::{active_box, arch, box_indices, in_box, tiny_net_in, tiny_odd_space};
use rand::{RngExt, SeedableRng};

const H: f32 = 1e-2;

fn batch(n: usize, r: usize) -> (Vec<f32>, Vec<u32>) {
    (random_vec(3, n * 3 * r * r, -2.0, 2.0), (0..n as u32).map(|i| (i * 7 + 2) % 10).collect())
}

#[test]
fn gradients_match_finite_differences_of_the_dumped_loss() {
    let space = tiny_odd_space();
    let b = CpuBackend::new();
    let (net, named) = tiny_net_in(&b, 5, space.clone());
    // r 26: s1 8 -> 16 (1x1 shortcut), s2 stride 2 on 13 (padded pool, 16 -> 24 conv, k 5), s3 stride 2 on 7
    // (padded pool only, 24 -> 24, SE, k 3), s4 24 -> 32 (conv shortcut, SE)
    let a = arch(26, [8, 16, 24, 24, 32, 64], [1, 1, 2, 1], [3, 5, 3, 5], [1, 3, 2, 4]);
    let (n, eps) = (3, 0.1);
    let (x, y) = batch(n, 26);
    let got = subnet_gradients(&b, &net, &a, &x, &y, eps).unwrap();
    assert!(got.loss.is_finite() && got.loss > 0.5, "loss {}", got.loss);

    let table = &net.table;
    assert_eq!(got.grads.len(), table.params.len());
    let mut rng = rand::rngs::StdRng::seed_from_u64(9);
    let mut samples = Vec::new();
    for (g, p) in got.grads.iter().zip(&table.params) {
        assert_eq!((&g.name, &g.shape), (&p.name, &p.torch_shape));
        let bx = active_box(&space, &a, &g.name, &g.shape);
        let active = bx.iter().all(|r| !r.is_empty());
        let mut nonzero = false;
        for (i, &v) in g.data.iter().enumerate() {
            if in_box(&g.shape, &bx, i) {
                nonzero |= v != 0.0;
            } else {
                assert_eq!(v, 0.0, "{}[{i}] is outside the active slice", g.name);
            }
        }
        // project-BN betas have a true gradient of 0 (a per-channel shift before a batch-statistics BN)
        let shift_only = g.name.contains("point_linear.bn.bn.bias");
        assert!(active == nonzero || shift_only, "{}: active {active}, non-zero gradient {nonzero}", g.name);
        if active
            && !shift_only
            && (g.name.starts_with("blocks.1.") || g.name.starts_with("blocks.3.") || !g.name.starts_with("blocks."))
        {
            let idx = box_indices(&g.shape, &bx);
            samples.push((g.name.clone(), idx[rng.random_range(0..idx.len())]));
        }
    }
    assert!(samples.len() > 20, "{} samples", samples.len());
    let mut worst = 0f64;
    let mut fails = Vec::new();
    for (name, i) in &samples {
        let mut l = [0f64; 2];
        for (k, sign) in [1.0f32, -1.0].into_iter().enumerate() {
            let mut w: Vec<NamedTensor> = named.clone();
            w.iter_mut().find(|t| &t.name == name).unwrap().data[*i] += sign * H;
            net.load_named(&b, &w, "perturbed").unwrap();
            l[k] = subnet_gradients(&b, &net, &a, &x, &y, eps).unwrap().loss as f64;
        }
        let fd = (l[0] - l[1]) / (2.0 * H as f64);
        let an = got.grads.iter().find(|g| &g.name == name).unwrap().data[*i] as f64;
        let excess = (fd - an).abs() / (2e-4 + 2e-2 * an.abs());
        worst = worst.max(excess);
        if excess > 1.0 {
            fails.push(format!("{name}[{i}]: dumped {an:e}, finite difference {fd:e}"));
        }
    }
    println!("{} samples, worst |fd - dumped| / tolerance {worst:.3}", samples.len());
    assert!(fails.is_empty(), "{}", fails.join("\n"));
}

fn attnas(args: &[&str]) -> std::process::Output {
    let bin = std::env::var("ATTNAS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attnas").to_string());
    Command::new(bin).args(args).output().expect("run attnas")
}

fn usage_error(args: &[&str]) -> String {
    let out = attnas(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: expected exit 2, stderr:\n{err}");
    assert_eq!(err.trim().lines().filter(|l| l.starts_with("error")).count(), 1, "one error line: {err}");
    err
}

/// A labels file of `dtype` ('<i8' or '<f4') with shape [values.len()].
fn labels_npy(path: &std::path::Path, values: &[i64], float: bool) {
    let bytes = if float {
        npy_bytes(&[values.len()], &values.iter().map(|&v| v as f32).collect::<Vec<_>>()).unwrap()
    } else {
        let f = npy_bytes(&[values.len()], &vec![0.0; values.len()]).unwrap();
        let header_end = f.len() - 4 * values.len();
        let header = String::from_utf8_lossy(&f[10..header_end]).replace("'<f4'", "'<i8'");
        let mut out = f[..8].to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
        out
    };
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn cli_writes_the_library_result_and_refuses_bad_input() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("grad-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let b = CpuBackend::new();
    let space = attnas::space::Space::builtin("tiny").unwrap();
    let (net, named) = tiny_net_in(&b, 7, space);
    let ckpt = dir.join("supernet.safetensors");
    let records: Vec<TensorRecord> = named
        .iter()
        .map(|t| TensorRecord { name: t.name.clone(), shape: t.shape.clone(), data: t.data.clone() })
        .collect();
    write_safetensors(&ckpt, &records, &Default::default()).unwrap();

    let a = arch(24, [16, 8, 24, 24, 40, 64], [1, 2, 1, 2], [3, 3, 5, 3], [1, 3, 2, 4]);
    let (n, r) = (2, 24);
    let (x, y) = batch(n, r);
    let (xp, yp, out) = (dir.join("x.npy"), dir.join("y.npy"), dir.join("g.safetensors"));
    std::fs::write(&xp, npy_bytes(&[n, 3, r, r], &x).unwrap()).unwrap();
    labels_npy(&yp, &y.iter().map(|&v| v as i64).collect::<Vec<_>>(), false);
    let arch_json = a.to_json();
    let (c, xs, ys, os) = (ckpt.to_str().unwrap(), xp.to_str().unwrap(), yp.to_str().unwrap(), out.to_str().unwrap());
    let base = ["grad", "--ckpt", c, "--config", "tiny", "--arch", &arch_json, "--device", "cpu"];
    let with = |x: &str, y: &str, o: &str| {
        let mut v: Vec<String> = base.iter().map(|s| s.to_string()).collect();
        v.extend(["--inputs", x, "--labels", y, "--out", o, "--label-smoothing", "0.1"].map(String::from));
        v
    };
    let args = with(xs, ys, os);
    let res = attnas(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));

    let want = subnet_gradients(&b, &net, &a, &x, &y, 0.1).unwrap();
    let (tensors, meta) = read_safetensors(&out).unwrap();
    assert_eq!(meta["format"], "attnas-grad/1");
    let by_name: std::collections::HashMap<&str, &TensorRecord> =
        tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    assert_eq!((&by_name["loss"].shape, by_name["loss"].data[0]), (&vec![1], want.loss));
    assert_eq!(tensors.len(), 1 + want.grads.len());
    for g in &want.grads {
        let t = by_name[g.name.as_str()];
        assert_eq!((&t.shape, &t.data), (&g.shape, &g.data), "{}", g.name);
    }

    // inputs at another resolution: the file and both shapes
    let x28 = dir.join("x28.npy");
    std::fs::write(&x28, npy_bytes(&[n, 3, 28, 28], &vec![0.0; n * 3 * 28 * 28]).unwrap()).unwrap();
    let args = with(x28.to_str().unwrap(), ys, os);
    let err = usage_error(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("x28.npy") && err.contains("[2, 3, 28, 28]") && err.contains("[N, 3, 24, 24]"), "{err}");
    // labels of another length, out of range, not integers
    let short = dir.join("short.npy");
    labels_npy(&short, &[1, 2, 3], false);
    let args = with(xs, short.to_str().unwrap(), os);
    let err = usage_error(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("short.npy") && err.contains("[3]") && err.contains("[2]"), "{err}");
    let big = dir.join("big.npy");
    labels_npy(&big, &[1, 10], false);
    let args = with(xs, big.to_str().unwrap(), os);
    let err = usage_error(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("big.npy") && err.contains("label 10") && err.contains("0..10"), "{err}");
    let float = dir.join("float.npy");
    labels_npy(&float, &[1, 2], true);
    let args = with(xs, float.to_str().unwrap(), os);
    let err = usage_error(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("float.npy") && err.contains("integers"), "{err}");
    // a checkpoint of another space (the tiny supernet read as AttentiveNAS's)
    let mut args = with(xs, ys, os);
    let i = args.iter().position(|s| s == "tiny").unwrap();
    args[i] = "attentivenas".into();
    let j = args.iter().position(|s| s == &arch_json).unwrap();
    args[j] = "a0".into();
    let err = usage_error(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("supernet.safetensors") && err.contains("has shape") && err.contains("needs"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
