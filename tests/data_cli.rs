//! The commands end to end: `attnas prepare` on a small real tree prints its summary and names skipped
//! files; `attnas data inspect` prints the header and writes a contact sheet PNG of the right size;
//! a damaged packed file gives a one-line error naming the file and exit code 2.

mod data_common;

use std::process::Command;

use data_common::{copy_sample_classes, imagenet_sample, scratch};

fn attnas(args: &[&str]) -> (i32, String) {
    let out = Command::new(attnas_bin()).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn prepare_then_inspect() {
    let Some(sample) = imagenet_sample("prepare_then_inspect") else { return };
    let dir = scratch("cli");
    let src = dir.join("src");
    let classes = copy_sample_classes(&sample, &src, 5);
    std::fs::write(src.join("train").join(&classes[0]).join("empty.JPEG"), b"").unwrap();
    let out = dir.join("out");
    let (code, text) = attnas(&["prepare", src.to_str().unwrap(), out.to_str().unwrap(), "--quiet"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("train: 5 images, 5 classes") && text.contains("1 skipped"), "{text}");
    assert!(text.contains("empty.JPEG: zero-byte file"), "{text}");

    let pack = out.join("train.pack");
    let sheet = dir.join("sheet.png");
    let args = ["data", "inspect", pack.to_str().unwrap(), "--index", "2", "--grid", "2", "--crop", "64"];
    let (code, text) = attnas(&[&args[..], &["--out", sheet.to_str().unwrap()]].concat());
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("5 records, 5 classes, payload jpeg") && text.contains("record 2: label 2"), "{text}");
    let png = image::open(&sheet).unwrap();
    assert_eq!((png.width(), png.height()), (2 * 64 + 3 * 4, 2 * 64 + 3 * 4));

    // A damaged file: one line naming the file and the fault, exit code 2.
    let bytes = std::fs::read(&pack).unwrap();
    let cut = dir.join("cut.pack");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let (code, text) = attnas(&["data", "inspect", cut.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.starts_with("error: ") && text.contains("cut.pack") && text.contains("outside"), "{text}");
}

/// The binary under test: `ATTNAS_BIN` (set by the GPU bundle's run.sh) or the one cargo built.
fn attnas_bin() -> String {
    std::env::var("ATTNAS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attnas").to_string())
}
