//! `attnas export`: the static subnet's safetensors (AttentiveNAS static-model names, sliced shapes,
//! recalibrated BN; by default BN folded into the convs, `--no-fold-bn` keeps it), arch.json, and an ONNX
//! graph whose structure is checked here and whose logits onnxruntime reproduces against `attnas eval`'s
//! (folded against folded, unfolded against `--no-fold-bn`; scripts/onnx_check.py, when the Python tools
//! are installed).
//!
//! Parity tolerance: |onnx - rust| <= 1e-4 + 1e-4 * max|rust logit|. Both sides compute in float32 and
//! differ only in summation order (ORT's convolutions and GEMMs against ours), which costs a few ulps per
//! op (~1e-6 relative, observed ~3e-7 absolute on logits of magnitude ~1); 1e-4 of the logit scale keeps
//! a wide margin for that while any real mistake (a wrong slice or kernel crop, a missing BN, the wrong
//! epsilon or activation) moves logits by 1e-2 or more.

mod eval_common;

use std::collections::HashMap;

use attnas::eval::onnx::proto::ModelProto;
use attnas::eval::onnx::{build_model, INPUT, OPSET, OUTPUT};
use attnas::eval::static_subnet::extract;
use attnas::nn::{NamedTensor, ParamTable};
use attnas::space::{Arch, Space};
use eval_common::{attnas_ok, attnas_usage_error, fixture, python_tools, scratch};

/// A tiny-space arch with every block kind: no expand conv (s1), kernel 3 (centre crop) and 5, a
/// stride-2 shortcut with pool + conv (s2 block 0), pool only (s3 block 0, 24 -> 24), conv only (s4
/// block 0), identity shortcuts, SE (s3, s4).
const ARCH: &str =
    r#"{"resolution":24,"width":[16,8,24,24,40,64],"depth":[1,2,1,2],"kernel":[3,3,5,3],"expand":[1,3,2,4]}"#;

fn op_counts(m: &ModelProto) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for n in &m.graph.as_ref().unwrap().node {
        *c.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    c
}

#[test]
fn onnx_graph_has_the_subnet_structure() {
    let space = Space::builtin("tiny").unwrap();
    let (arch, _) = Arch::parse(ARCH).unwrap();
    let table = ParamTable::new(&space).unwrap();
    let named: Vec<NamedTensor> = table
        .params
        .iter()
        .chain(&table.buffers)
        .enumerate()
        .map(|(i, p)| NamedTensor {
            name: p.name.clone(),
            shape: p.torch_shape.clone(),
            data: vec![i as f32; p.torch_len()],
        })
        .collect();
    let tensors = extract(&space, &arch, &named).unwrap();
    let dw = tensors.iter().find(|t| t.name == "blocks.0.mobile_inverted_conv.depth_conv.conv.weight").unwrap();
    assert_eq!(dw.shape, vec![16, 1, 3, 3]);
    assert!(!tensors.iter().any(|t| t.name.starts_with("blocks.0.mobile_inverted_conv.inverted_bottleneck")));
    let se = tensors.iter().find(|t| t.name == "blocks.5.mobile_inverted_conv.depth_conv.se.fc.reduce.weight").unwrap();
    assert_eq!(se.shape, vec![40, 160, 1, 1]); // mid 40 * 4 = 160, se_mid = 160 / 4
    assert!(!tensors.iter().any(|t| t.name.starts_with("blocks.6.")));

    let model = ModelProto::from_bytes(&build_model(&space, &arch, &tensors, &[]).unwrap().to_bytes()).unwrap();
    assert_eq!((model.ir_version, model.opset_import[0].version), (8, OPSET));
    let g = model.graph.as_ref().unwrap();
    assert_eq!((g.input[0].name.as_str(), g.output[0].name.as_str()), (INPUT, OUTPUT));
    let ops = op_counts(&model);
    assert_eq!(ops["Add"], 6, "one residual add per block");
    assert_eq!(ops["AveragePool"], 2, "stride-2 blocks");
    assert_eq!(ops["HardSigmoid"], 3, "SE blocks");
    assert_eq!(ops["BatchNormalization"], 1 + 2 + 5 * 3 + 1);
    assert_eq!(ops["Gemm"], 1);
    // Shortcut convs: s1 b0 (16 -> 8), s2 b0 (8 -> 24), s4 b0 (24 -> 40); unused ones are not initializers.
    let sc: Vec<&str> = g.initializer.iter().map(|t| t.name.as_str()).filter(|n| n.contains("shortcut")).collect();
    assert_eq!(sc, ["blocks.0.shortcut.conv.weight", "blocks.1.shortcut.conv.weight", "blocks.4.shortcut.conv.weight"]);
    let dw_node = g.node.iter().find(|n| n.name == "blocks.2.mobile_inverted_conv.depth_conv.conv").unwrap();
    let attr = |k: &str| dw_node.attribute.iter().find(|a| a.name == k).cloned().unwrap();
    assert_eq!(
        (attr("group").i, attr("strides").ints.clone(), attr("pads").ints.clone()),
        (Some(72), vec![1, 1], vec![1; 4])
    );

    // Folded: the same graph with each Conv + BatchNormalization pair one Conv with a bias.
    let folded = attnas::deploy::fold::fold_bn(&space, &arch, &tensors).unwrap();
    let fm = build_model(&space, &arch, &folded, &[]).unwrap();
    let fops = op_counts(&fm);
    assert!(!fops.contains_key("BatchNormalization"), "{fops:?}");
    assert_eq!(fops["Conv"], ops["Conv"]);
    let with_bias =
        fm.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type == "Conv" && n.input.len() == 3).count();
    assert_eq!(with_bias, ops["BatchNormalization"] + 2 * ops["HardSigmoid"], "folded convs + the SE convs");
}

/// At resolution 28 (a variant of the tiny space) the stride-2 block of s3 pools a 7 x 7 map: its
/// AveragePool pads by one with count_include_pad, as the original's `F.avg_pool2d(x, 2, padding=1)`;
/// the even 14 x 14 pool of s2 has no pads.
#[test]
fn onnx_pads_the_shortcut_pool_at_odd_sizes() {
    let mut space = Space::builtin("tiny").unwrap();
    space.resolutions = vec![24, 28, 32];
    let (arch, _) = Arch::parse(ODD_ARCH).unwrap();
    let table = ParamTable::new(&space).unwrap();
    let named: Vec<NamedTensor> = table
        .params
        .iter()
        .chain(&table.buffers)
        .map(|p| NamedTensor { name: p.name.clone(), shape: p.torch_shape.clone(), data: vec![0.5; p.torch_len()] })
        .collect();
    let tensors = extract(&space, &arch, &named).unwrap();
    let model = build_model(&space, &arch, &tensors, &[]).unwrap();
    let pools: Vec<_> = model.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type == "AveragePool").collect();
    assert_eq!(pools.len(), 2);
    let attr = |n: &attnas::eval::onnx::proto::NodeProto, k: &str| n.attribute.iter().find(|a| a.name == k).cloned();
    assert_eq!(attr(pools[0], "pads").unwrap().ints, vec![0; 4], "14 x 14: no padding");
    assert_eq!(attr(pools[1], "pads").unwrap().ints, vec![1; 4], "7 x 7: padded by one");
    assert_eq!(attr(pools[1], "count_include_pad").unwrap().i, Some(1));
}

/// A tiny-space arch at resolution 28: stem 14, s2 (stride 2, 16 -> 24) 14 -> 7, s3 (stride 2, 24 -> 24,
/// pool only) 7 -> 4 (odd), s4 (24 -> 40) at 4.
const ODD_ARCH: &str =
    r#"{"resolution":28,"width":[16,16,24,24,40,64],"depth":[1,1,2,1],"kernel":[3,5,3,5],"expand":[1,2,3,4]}"#;

/// The ONNX model of the odd-size arch in onnxruntime against attnas's logits (the fixture's checkpoint
/// read with a space file that adds resolution 28; the tensors do not depend on the resolutions).
#[test]
fn odd_size_export_matches_the_rust_forward_in_onnxruntime() {
    let Some(f) = fixture("odd_size_export_matches_the_rust_forward_in_onnxruntime") else { return };
    let Some(py) = python_tools("odd_size_export_matches_the_rust_forward_in_onnxruntime") else { return };
    let dir = scratch("export-odd");
    let tiny = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.yaml")).unwrap();
    let yaml: String = tiny
        .lines()
        .map(|l| if l.starts_with("resolutions:") { "resolutions: [24, 28, 32]" } else { l })
        .collect::<Vec<_>>()
        .join("\n");
    let (space_file, arch_file, out) = (dir.join("tiny28.yaml"), dir.join("odd.json"), dir.join("model"));
    std::fs::write(&space_file, yaml).unwrap();
    std::fs::write(&arch_file, ODD_ARCH).unwrap();
    let (sf, a, o) = (space_file.to_str().unwrap(), arch_file.to_str().unwrap(), out.to_str().unwrap());
    let calib = ["--calib-batches", "2", "--calib-batch-size", "32", "--device", "cpu", "--quiet", "--config", sf];
    let mut args = vec!["export", "--ckpt", f.run(), "--data", f.data(), "--arch", a, "--out", o];
    args.extend(calib);
    attnas_ok(&args);
    let s = onnx_parity(&py, f, &dir, &[a, "32"], &calib, &out);
    assert_eq!(s["input_shape"], serde_json::json!([32, 3, 28, 28]));
    assert_eq!(s["within_tolerance"], true, "{s}");
    println!("onnx parity at odd sizes: max |diff| {} (bound {})", s["max_abs_diff"], s["bound"]);
}

#[test]
fn export_matches_the_rust_forward_in_onnxruntime() {
    let Some(f) = fixture("export_matches_the_rust_forward_in_onnxruntime") else { return };
    for fold in [true, false] {
        export_and_check(f, fold);
    }
}

/// Exports ARCH (BN folded or not), checks the files, and (with the Python tools) compares onnxruntime's
/// logits with `attnas eval`'s on the same images, the eval folded or not to match.
fn export_and_check(f: &eval_common::Fixture, fold: bool) {
    let dir = scratch(if fold { "export-folded" } else { "export-bn" });
    let arch_file = dir.join("subnet.json");
    std::fs::write(&arch_file, ARCH).unwrap();
    let out = dir.join("model");
    let (a, o) = (arch_file.to_str().unwrap(), out.to_str().unwrap());
    let mut calib =
        vec!["--calib-batches", "4", "--calib-batch-size", "64", "--seed", "7", "--device", "cpu", "--quiet"];
    if !fold {
        calib.push("--no-fold-bn");
    }
    let mut args = vec!["export", "--ckpt", f.run(), "--data", f.data(), "--arch", a, "--out", o, "--json"];
    args.extend(&calib);
    let report: serde_json::Value = serde_json::from_str(&attnas_ok(&args)).unwrap();
    assert_eq!(report["calib_images"], 256);
    assert_eq!(report["bn_folded"], fold);

    // arch.json: the arch (readable by --arch) plus its cost.
    let arch_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("arch.json")).unwrap()).unwrap();
    let (arch, flops) = Arch::parse(&arch_json.to_string()).unwrap();
    assert_eq!(arch, Arch::parse(ARCH).unwrap().0);
    assert!((flops.unwrap() - report["mflops"].as_f64().unwrap()).abs() < 1e-3);
    assert!(arch_json["params"].as_f64().unwrap() > 0.0);

    // Weights: static names and shapes; BN statistics recalibrated (no longer the initial 0 / 1), or
    // folded away into conv biases.
    let (tensors, meta) = attnas::checkpoint::read_safetensors(&out.join("model.safetensors")).unwrap();
    assert_eq!(meta["format"], if fold { "attnas-folded-subnet/1" } else { "attnas-static-subnet/1" });
    assert_eq!(meta["bn_folded"], fold.to_string());
    let by_name: HashMap<&str, _> = tensors.iter().map(|t| (t.name.as_str(), t)).collect();
    assert_eq!(by_name["first_conv.conv.weight"].shape, vec![16, 3, 3, 3]);
    assert_eq!(by_name["last_conv.2.conv.weight"].shape, vec![64, 240, 1, 1]);
    if fold {
        assert!(!tensors.iter().any(|t| t.name.contains(".bn.")), "a BN tensor in the folded export");
        assert_eq!(by_name["blocks.3.mobile_inverted_conv.depth_conv.conv.bias"].shape, vec![48]);
    } else {
        let var = &by_name["blocks.3.mobile_inverted_conv.depth_conv.bn.running_var"];
        assert!(var.data.iter().any(|&v| (v - 1.0).abs() > 1e-3), "running_var still at its initial 1");
    }

    let Some(py) = python_tools("export_matches_the_rust_forward_in_onnxruntime") else { return };
    let s = onnx_parity(&py, f, &dir, &[a, "64"], &calib, &out);
    assert_eq!(s["checker"], "ok");
    assert_eq!(s["input_shape"], serde_json::json!([64, 3, 24, 24]));
    assert_eq!(s["output_shape"], serde_json::json!([64, 10]));
    assert_eq!(s["within_tolerance"], true, "{s}");
    assert_eq!(s["argmax_agreement"], 1.0, "{s}");
    println!("onnx parity (folded: {fold}): max |diff| {} (bound {})", s["max_abs_diff"], s["bound"]);
}

/// Dumps `eval`'s inputs and logits of `arch_and_images` = [arch, image count] (with `calib` flags) into
/// `dir`, runs scripts/onnx_check.py on `out/model.onnx` (tolerance 1e-4 + 1e-4 of the logit scale) and
/// returns its JSON summary.
fn onnx_parity(
    py: &std::path::Path,
    f: &eval_common::Fixture,
    dir: &std::path::Path,
    arch_and_images: &[&str; 2],
    calib: &[&str],
    out: &std::path::Path,
) -> serde_json::Value {
    let (inputs, logits) = (dir.join("inputs.npy"), dir.join("logits.npy"));
    let [a, images] = *arch_and_images;
    let mut args = vec!["eval", "--ckpt", f.run(), "--data", f.data(), "--arch", a, "--max-images", images];
    args.extend(calib);
    args.extend(["--dump-inputs", inputs.to_str().unwrap(), "--dump-logits", logits.to_str().unwrap()]);
    attnas_ok(&args);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/onnx_check.py");
    let res = std::process::Command::new(py)
        .args([script, out.join("model.onnx").to_str().unwrap(), inputs.to_str().unwrap()])
        .args(["--logits", logits.to_str().unwrap(), "--atol", "1e-4", "--rtol", "1e-4", "--json"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "onnx_check failed:\n{stdout}\n{}", String::from_utf8_lossy(&res.stderr));
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[test]
fn export_refuses_bad_input() {
    let Some(f) = fixture("export_refuses_bad_input") else { return };
    let dir = scratch("export-bad");
    let o = dir.join("out");
    let bad = ARCH.replace("\"resolution\":24", "\"resolution\":28");
    let args = [
        "export",
        "--ckpt",
        f.run(),
        "--data",
        f.data(),
        "--arch",
        &bad,
        "--out",
        o.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    let err = attnas_usage_error(&args);
    assert!(err.contains("resolution = 28") && err.contains("allowed: 24, 32"), "{err}");
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    let args = [
        "export",
        "--ckpt",
        f.run(),
        "--data",
        f.data(),
        "--arch",
        "min",
        "--out",
        file.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    let err = attnas_usage_error(&args);
    assert!(err.contains("is a file"), "{err}");
}

/// Several `--arch` items export into one folder each (name, file stem, inline-N), each the same as
/// exporting it alone; two items that would share a folder are refused before any work.
#[test]
fn export_writes_one_folder_per_arch() {
    let Some(f) = fixture("export_writes_one_folder_per_arch") else { return };
    let dir = scratch("export-list");
    let arch_file = dir.join("subnet.json");
    std::fs::write(&arch_file, ARCH).unwrap();
    let calib = ["--calib-batches", "1", "--calib-batch-size", "16", "--device", "cpu", "--quiet"];
    let list = format!("min,{},{ARCH}", arch_file.display());
    let out = dir.join("all");
    let mut args = vec!["export", "--ckpt", f.run(), "--data", f.data(), "--arch", &list, "--json"];
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(calib);
    let reports: serde_json::Value = serde_json::from_str(&attnas_ok(&args)).unwrap();
    let names: Vec<&str> = reports.as_array().unwrap().iter().map(|r| r["arch_name"].as_str().unwrap()).collect();
    assert_eq!(names, ["min", arch_file.to_str().unwrap(), ARCH]);
    for sub in ["min", "subnet", "inline-1"] {
        assert!(out.join(sub).join("model.onnx").is_file(), "{sub}/model.onnx missing");
    }
    // The file item's folder holds what a single export of it writes.
    let alone = dir.join("alone");
    let mut args = vec!["export", "--ckpt", f.run(), "--data", f.data(), "--arch", arch_file.to_str().unwrap()];
    args.extend(["--out", alone.to_str().unwrap()]);
    args.extend(calib);
    attnas_ok(&args);
    // (Weights bit for bit; the metadata differs only in the timing it records.)
    let weights = |d: std::path::PathBuf| {
        let (t, _) = attnas::checkpoint::read_safetensors(&d.join("model.safetensors")).unwrap();
        t.into_iter()
            .map(|t| (t.name, t.shape, t.data.iter().map(|v| v.to_bits()).collect()))
            .collect::<Vec<(_, _, Vec<u32>)>>()
    };
    assert!(weights(alone.clone()) == weights(out.join("subnet")), "a listed export differs from a single one");
    let read = |p: std::path::PathBuf| std::fs::read(p).unwrap();
    assert_eq!(read(alone.join("arch.json")), read(out.join("subnet").join("arch.json")));
    assert_eq!(read(out.join("inline-1").join("arch.json")), read(out.join("subnet").join("arch.json")));

    let twice = format!("{},{}", arch_file.display(), arch_file.display());
    let args = ["export", "--ckpt", f.run(), "--data", f.data(), "--arch", &twice, "--out", out.to_str().unwrap()];
    let err = attnas_usage_error(&args);
    assert!(err.contains("would both export to") && err.contains("subnet"), "{err}");
}

/// `--precision bf16`: model.safetensors holds bf16 tensors (the weights are the fp32 export's rounded
/// to nearest even; the BN statistics come from a calibration with bf16 activations), the metadata says
/// so, the file is about half the size, and the ONNX graph stays fp32.
#[test]
fn export_in_bf16_stores_bf16_tensors() {
    let Some(f) = fixture("export_in_bf16_stores_bf16_tensors") else { return };
    let dir = scratch("export-bf16");
    let arch_file = dir.join("subnet.json");
    std::fs::write(&arch_file, ARCH).unwrap();
    let export = |precision: &str| {
        let out = dir.join(precision);
        let (a, o) = (arch_file.to_str().unwrap(), out.to_str().unwrap());
        let args = [
            "export",
            "--ckpt",
            f.run(),
            "--data",
            f.data(),
            "--arch",
            a,
            "--out",
            o,
            "--json",
            "--calib-batches",
            "2",
            "--calib-batch-size",
            "32",
            "--device",
            "cpu",
            "--quiet",
            "--no-fold-bn",
            "--precision",
            precision,
        ];
        let report: serde_json::Value = serde_json::from_str(&attnas_ok(&args)).unwrap();
        assert_eq!(report["precision"], precision);
        out
    };
    let (full, half) = (export("fp32"), export("bf16"));
    let contents =
        |dir: &std::path::Path| attnas::checkpoint::read_safetensors_all(&dir.join("model.safetensors")).unwrap();
    let (c32, c16) = (contents(&full), contents(&half));
    assert_eq!(c16.metadata["precision"], "bf16");
    assert_eq!(c32.metadata["precision"], "fp32");
    let size = |dir: &std::path::Path| std::fs::metadata(dir.join("model.safetensors")).unwrap().len() as f64;
    let ratio = size(&half) / size(&full);
    assert!((0.45..0.6).contains(&ratio), "bf16 file / fp32 file = {ratio}");
    for (t16, t32) in c16.tensors.iter().zip(&c32.tensors) {
        assert_eq!((&t16.name, &t16.shape), (&t32.name, &t32.shape));
        assert!(t16.data.iter().all(|v| v.to_bits() & 0xffff == 0), "{}: not bf16 values", t16.name);
        if !t16.name.contains("running_") {
            // weights do not depend on the calibration: exactly the fp32 export's, rounded
            let want: Vec<u32> = t32.data.iter().map(|&v| attnas::backend::dtype::round_bf16(v).to_bits()).collect();
            let got: Vec<u32> = t16.data.iter().map(|v| v.to_bits()).collect();
            assert_eq!(got, want, "{}", t16.name);
        }
    }
    let onnx = std::fs::read(half.join("model.onnx")).unwrap();
    let m = ModelProto::from_bytes(&onnx).unwrap();
    assert!(m.graph.unwrap().initializer.iter().all(|t| t.data_type == 1), "ONNX initializers stay FLOAT");
}
