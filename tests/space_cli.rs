//! The space commands through the built binary: the acceptance numbers, and exit code 2 with a
//! one-line message naming the problem for bad input.

use std::process::Command;

fn attnas(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(attnas_bin()).args(args).output().expect("run attnas");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

#[test]
fn flops_prints_the_released_numbers() {
    for (name, want) in [
        ("a0", "203.4 MFLOPs"),
        ("a1", "279.2 MFLOPs"),
        ("a2", "316.7 MFLOPs"),
        ("a3", "356.5 MFLOPs"),
        ("a4", "443.5 MFLOPs"),
        ("a5", "490.5 MFLOPs"),
        ("a6", "709.0 MFLOPs"),
        ("a5-1", "594.8 MFLOPs"),
        ("max", "1939.3 MFLOPs"),
    ] {
        let (code, out, err) = attnas(&["flops", "--arch", name]);
        assert_eq!(code, 0, "{err}");
        assert!(out.starts_with(&format!("{name}: {want}")), "{out}");
    }
    let (code, out, _) = attnas(&["flops", "--arch", "a0", "--per-layer"]);
    assert_eq!(code, 0);
    assert!(out.contains("mb7.0.se") && out.contains("classifier") && out.contains("8.95 M params"), "{out}");
}

/// `--arch` lists: comma-separated and repeated values, inline archs keeping their commas.
#[test]
fn flops_takes_arch_lists() {
    let a0 = attnas::space::Space::builtin("attentivenas").unwrap().named_arch("a0").unwrap().to_json();
    let (code, out, err) = attnas(&["flops", "--arch", "a6,a0", "--arch", &format!("{a0},max")]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("a6: 709.0 MFLOPs") && lines[1].starts_with("a0: 203.4 MFLOPs"), "{out}");
    assert!(lines[2].starts_with(&format!("{a0}: 203.4 MFLOPs")) && lines[3].starts_with("max: 1939.3"), "{out}");
    let (code, _, err) = attnas(&["flops", "--arch", "a0,a9"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error: --arch item 2 of 2 ('a9'): unknown arch name 'a9'"), "{err}");
}

#[test]
fn space_prints_the_summary() {
    let (code, out, err) = attnas(&["space"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("subnets: 4.40e11"), "{out}");
    assert!(out.contains("FLOPs range: 203.4 - 1939.3 MFLOPs"), "{out}");
    assert!(out.contains("depth range: 17 - 37 blocks"), "{out}");
    let (code, out, _) = attnas(&["space", "--config", "tiny"]);
    assert_eq!(code, 0);
    assert!(out.contains("space tiny: 10 classes"), "{out}");
}

#[test]
fn flops_table_writes_a_readable_map_file() {
    let dir = std::env::temp_dir().join(format!("attnas-space-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.map");
    let p = path.to_str().unwrap();
    let (code, out, err) = attnas(&["flops-table", "--samples", "40", "--out", p, "--seed", "3"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("wrote 40 entries"), "{out}");
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 40);
    assert!(text.starts_with("{'flops': 203.389568, 'resolution': 192,"), "{text}");
    let space = attnas::space::Space::builtin("attentivenas").unwrap();
    assert_eq!(attnas::space::table::read_table(&space, &path).unwrap().len(), 40);
    // Same seed, same table.
    let path2 = dir.join("t2.map");
    attnas(&["flops-table", "--samples", "40", "--out", path2.to_str().unwrap(), "--seed", "3"]);
    assert_eq!(std::fs::read_to_string(&path2).unwrap(), text);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let dir = std::env::temp_dir().join(format!("attnas-space-cli-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let arch_file = dir.join("bad.json");
    std::fs::write(
        &arch_file,
        "{\"resolution\": 192, \"width\": [16], \"depth\": [1], \"kernel\": [3], \"expand\": [1]}",
    )
    .unwrap();
    let af = arch_file.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (vec!["flops", "--arch", "a9"], "unknown arch name 'a9'".into()),
        (
            vec!["flops", "--arch", "{\"resolution\":200,\"width\":[16,16,24,32,64,112,192,216,1792],\"depth\":[1,3,3,3,3,3,1],\"kernel\":[3,3,3,3,3,3,3],\"expand\":[1,4,4,4,4,6,6]}"],
            "resolution = 200 is not in space 'attentivenas'; allowed: 192, 224, 256, 288".into(),
        ),
        (vec!["flops", "--arch", &af], format!("{af}: width has 1 values")),
        (vec!["flops", "--arch", "{resolution: 192, widht: [16]}"], "unknown field `widht`".into()),
        (vec!["space", "--config", "/nonexistent/space.yaml"], "'/nonexistent/space.yaml' is not a file".into()),
        (vec!["flops", "--arch", "a0", "--config", &af], "unknown field".into()),
        (vec!["flops-table", "--samples", "1", "--out", "/dev/null"], "--samples 1".into()),
        (vec!["flops-table", "--samples", "5", "--out", "/dev/null", "--method", "greedy"], "greedy".into()),
    ];
    for (args, want) in cases {
        let (code, out, err) = attnas(&args);
        assert_eq!(code, 2, "{args:?}: stdout {out} stderr {err}");
        assert!(err.contains(&want), "{args:?}: stderr '{err}' lacks '{want}'");
        if args[0] != "flops-table" || !want.contains("greedy") {
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: '{err}'");
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// The binary under test: `ATTNAS_BIN` (set by the GPU bundle's run.sh) or the one cargo built.
fn attnas_bin() -> String {
    std::env::var("ATTNAS_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_attnas").to_string())
}

/// A reader that stops early (`attnas params ... | head -1`): the command ends quietly by SIGPIPE, as any
/// Unix filter does, with no panic message; the global `--nvtx-ops` flag parses after the subcommand.
#[test]
fn a_closed_pipe_ends_a_report_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let mut child = Command::new(attnas_bin())
        .args(["params", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/configs/attentivenas.yaml"), "--nvtx-ops"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run attnas");
    let mut first = [0u8; 64];
    child.stdout.as_mut().unwrap().read_exact(&mut first).unwrap();
    drop(child.stdout.take()); // the reader goes away after 64 bytes of a table of about 100 KiB (more than a pipe holds)
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "ended by SIGPIPE: {status:?} {err}");
}
