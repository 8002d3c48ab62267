//! Arch text forms (ours and AttentiveNAS's), validation messages, the `.map` table reader/writer and
//! space-config errors. Bad input must come back as an error naming the place, never a panic.

use attnas::space::arch::{resolve_arch, resolve_arch_list, resolve_arch_list_of, split_arch_list, Arch};
use attnas::space::table::{self, TableEntry, TableMethod};
use attnas::space::{flops, sampler, Gene, Space};
use attnas::Error;
use rand::SeedableRng;

fn space() -> Space {
    Space::builtin("attentivenas").unwrap()
}

const A0_DICT: &str = "{'resolution': 192, 'width': [16, 16, 24, 32, 64, 112, 192, 216, 1792], 'kernel_size': [3, 3, 3, 3, 3, 3, 3], 'expand_ratio': [1, 4, 4, 4, 4, 6, 6], 'depth': [1, 3, 3, 3, 3, 3, 1]}";

#[test]
fn attentivenas_dict_json_and_yaml_forms_parse_to_the_same_arch() {
    let s = space();
    let a0 = s.named_arch("a0").unwrap();
    let (from_dict, f) = Arch::parse(A0_DICT).unwrap();
    assert_eq!(from_dict, a0);
    assert_eq!(f, None);
    assert_eq!(Arch::parse(&a0.to_json()).unwrap().0, a0);
    assert_eq!(Arch::parse(&a0.to_yaml()).unwrap().0, a0);
    let line = a0.to_attentivenas_dict(Some(203.389568));
    assert_eq!(Arch::parse(&line).unwrap(), (a0.clone(), Some(203.389568)));
    // AttentiveNAS's eval config carries a `model` key.
    let with_model = A0_DICT.replacen('{', "{'model': 'attentive_nas_a0', ", 1);
    assert_eq!(Arch::parse(&with_model).unwrap().0, a0);
    // Gene vector round trip in predictor order.
    let v = a0.to_vector();
    assert_eq!(v.len(), 31);
    assert_eq!(v[0], 192);
    assert_eq!(Arch::from_vector(&s, &v).unwrap(), a0);
    assert!(Arch::from_vector(&s, &v[1..]).unwrap_err().contains("wants 31"));
}

#[test]
fn validation_names_slot_value_and_choices() {
    let s = space();
    let mut a = s.named_arch("a3").unwrap();
    a.width[2] = 28;
    let e = s.validate(&a).unwrap_err();
    assert!(e.contains("width[2] (mb2) = 28") && e.contains("allowed: 24, 32"), "{e}");
    let mut a = s.min_arch();
    a.kernel[6] = 7;
    let e = s.validate(&a).unwrap_err();
    assert!(e.contains("kernel[6] (mb7) = 7") && e.contains("allowed: 3, 5"), "{e}");
    let mut a = s.min_arch();
    a.resolution = 200;
    assert!(s.validate(&a).unwrap_err().contains("resolution = 200"));
    let mut a = s.min_arch();
    a.depth.pop();
    let e = s.validate(&a).unwrap_err();
    assert!(e.contains("depth has 6 values") && e.contains("wants 7"), "{e}");
}

#[test]
fn resolve_arch_errors_are_usage_or_input_errors() {
    let s = space();
    let e = resolve_arch(&s, "a9").unwrap_err();
    assert!(matches!(e, Error::Usage(_)) && e.to_string().contains("a0"), "{e}");
    assert_eq!(e.exit_code(), 2);
    let bad = A0_DICT.replace("'expand_ratio': [1, 4,", "'expand_ratio': [1, 3,");
    let e = resolve_arch(&s, &bad).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("expand[1] (mb2) = 3"), "{e}");
    let e = resolve_arch(&s, "{'resolution': 192, 'width': [16]").unwrap_err();
    assert_eq!(e.exit_code(), 2);
    // A file holding one arch.
    let dir = std::env::temp_dir().join(format!("attnas-space-parse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("a6.yaml");
    std::fs::write(&p, s.named_arch("a6").unwrap().to_yaml()).unwrap();
    assert_eq!(resolve_arch(&s, p.to_str().unwrap()).unwrap(), s.named_arch("a6").unwrap());
    std::fs::remove_dir_all(&dir).ok();
}

/// The `--arch` rule every command shares: a value naming a file is one arch; otherwise commas outside
/// `{}`/`[]` separate items (names, files, inline archs), so inline JSON and dict literals keep theirs.
#[test]
fn arch_lists_split_at_commas_outside_brackets_and_name_the_bad_item() {
    let s = space();
    let (a0, a6) = (s.named_arch("a0").unwrap(), s.named_arch("a6").unwrap());
    assert_eq!(split_arch_list(" a0, min ,max,").unwrap(), ["a0", "min", "max"]);
    assert_eq!(split_arch_list("a0,,a1").unwrap(), ["a0", "a1"]);
    // Inline JSON and AttentiveNAS's dict literal, mixed with names.
    let list = format!("{},a6,{A0_DICT}", a0.to_json());
    assert_eq!(split_arch_list(&list).unwrap(), [a0.to_json().as_str(), "a6", A0_DICT]);
    let got = resolve_arch_list(&s, &[list.as_str()]).unwrap();
    let labels: Vec<&str> = got.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["inline-1", "a6", "inline-2"]);
    assert_eq!(got.iter().map(|(_, a)| a.clone()).collect::<Vec<_>>(), [a0.clone(), a6.clone(), a0.clone()]);
    // A repeated flag concatenates its lists; one inline arch is labelled `inline`.
    let got = resolve_arch_list(&s, &["a6,min", &a0.to_json()]).unwrap();
    assert_eq!(got.iter().map(|(l, _)| l.as_str()).collect::<Vec<_>>(), ["a6", "min", "inline"]);

    // A file whose name holds a comma is one arch when named alone; in a list, files sit beside names.
    let dir = std::env::temp_dir().join(format!("attnas-arch-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let comma = dir.join("front,best.yaml");
    std::fs::write(&comma, a6.to_yaml()).unwrap();
    let comma = comma.to_str().unwrap();
    assert_eq!(split_arch_list(comma).unwrap(), [comma]);
    assert_eq!(resolve_arch(&s, comma).unwrap(), a6);
    let plain = dir.join("a0.json");
    std::fs::write(&plain, a0.to_json()).unwrap();
    let list = format!("max,{}", plain.display());
    let got = resolve_arch_list(&s, &[list.as_str()]).unwrap();
    assert_eq!((got[1].0.as_str(), &got[1].1), (plain.to_str().unwrap(), &a0));

    // Errors name the item at fault and exit with code 2.
    let e = resolve_arch_list(&s, &["a0,a9,max"]).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().starts_with("--arch item 2 of 3 ('a9'): unknown arch name 'a9'"), "{e}");
    let e = resolve_arch_list(&s, &["a0,{'resolution': 192, 'width': [16]"]).unwrap_err();
    assert!(e.to_string().contains("unbalanced brackets in '{'resolution': 192, 'width': [16]'"), "{e}");
    let e = resolve_arch_list(&s, &["a0,a1}"]).unwrap_err();
    assert!(e.to_string().contains("unbalanced brackets in 'a1}'"), "{e}");
    let missing = dir.join("nope.json");
    let e = resolve_arch_list(&s, &[format!("a0,{}", missing.display())]).unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "item 2 of 2 ('{}'): --arch {}: no such file",
            missing.display(),
            missing.display()
        )),
        "{e}"
    );
    let e = resolve_arch_list(&s, &["[a0, a1]"]).unwrap_err();
    assert!(e.to_string().contains("an inline arch is a {...} mapping"), "{e}");
    let bad = A0_DICT.replace("'resolution': 192", "'resolution': 200");
    let e = resolve_arch_list(&s, &[format!("a0,{bad}")]).unwrap_err();
    assert!(e.to_string().contains("--arch (inline): resolution = 200"), "{e}");
    assert!(resolve_arch_list(&s, &[" , "]).unwrap_err().to_string().contains("give at least one arch"));
    let e = resolve_arch_list_of(&s, "--seed-arch", &["a0,zz"]).unwrap_err();
    assert!(e.to_string().starts_with("--seed-arch item 2 of 2 ('zz')"), "{e}");
    // A command that takes one arch refuses a list, naming what it got.
    let e = resolve_arch(&s, "a0,a6").unwrap_err();
    assert!(e.to_string().contains("takes one arch; got 2 (a0, a6)"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn table_round_trip_and_line_errors() {
    let s = space();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let entries = table::generate(&s, 50, TableMethod::Uniform, 25.0, &mut rng);
    assert_eq!(entries.len(), 50);
    assert_eq!(entries[0].arch, s.min_arch());
    assert_eq!(entries[1].arch, s.max_arch());
    for e in &entries {
        assert_eq!(e.mflops, flops::mflops(&s, &e.arch));
    }
    let text: String = entries.iter().map(|e| table::format_line(e) + "\n").collect();
    let back = table::parse_table(&s, &format!("# comment\n\n{text}"), "t.map").unwrap();
    assert_eq!(back, entries);

    let good = table::format_line(&TableEntry { arch: s.min_arch(), mflops: 203.4 });
    let cases = [
        (good.replace("'width': [16, 16,", "'width': [16, 8,"), "t.map:2: width[1] (mb1) = 8"),
        (good.replace("'flops': 203.4, ", ""), "t.map:2: flops: missing"),
        (good.replace("'depth': [1,", "'depth': ['x',"), "t.map:2: depth[0]: invalid type"),
        (good.replace("'resolution'", "'resolutoin'"), "t.map:2: unknown field `resolutoin`"),
        (good.replace("'flops': 203.4", "'flops': -1.0"), "t.map:2: flops: -1"),
        (good[..40].to_string(), "t.map:2:"),
    ];
    for (bad, want) in cases {
        let e = table::parse_table(&s, &format!("{good}\n{bad}\n"), "t.map").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(!e.to_string().contains("line 1"), "{e}");
        assert!(e.to_string().starts_with(want), "got '{e}', want prefix '{want}'");
    }
    assert!(table::parse_table(&s, "\n# only a comment\n", "t.map").is_err());
}

#[test]
fn space_config_errors_name_the_field() {
    let base = attnas::space::config::TINY_YAML;
    let cases = [
        (
            base.replace("resolutions: [24, 32]", "resolutions: [32, 24]"),
            "resolutions: choices must be strictly ascending",
        ),
        (
            base.replace(
                "kernel: [3, 5], expand: [2, 3], stride: 2, se: false",
                "kernel: [3, 4], expand: [2, 3], stride: 2, se: false",
            ),
            "stages[1] (s2).kernel: kernel sizes must be odd",
        ),
        (base.replace("stride: 1, se: true", "stride: 3, se: true"), "stages[3] (s4).stride: stride must be 1 or 2"),
        (base.replace("num_classes: 10", "num_classes: 10\nbogus: 1"), "unknown field `bogus`"),
        (base.replace("depth: [1]", "depth: []"), "stages[0] (s1).depth: the choice list is empty"),
    ];
    for (yaml, want) in cases {
        let e = Space::from_yaml(&yaml, "tiny.yaml").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(want), "got '{e}', want '{want}'");
    }
    // A named arch outside the space is rejected when the space loads.
    let with_named = format!(
        "{base}named_archs:\n  bad: {{resolution: 30, width: [8, 8, 16, 24, 32, 64], depth: [1, 1, 1, 1], kernel: [3, 3, 3, 3], expand: [1, 2, 2, 3]}}\n"
    );
    let e = Space::from_yaml(&with_named, "tiny.yaml").unwrap_err();
    assert!(e.to_string().contains("named_archs.bad: resolution = 30"), "{e}");
}

#[test]
fn tiny_space_is_well_formed() {
    let s = Space::builtin("tiny").unwrap();
    assert_eq!((s.num_classes, s.in_channels, s.head.expand_ratio), (10, 3, 6));
    assert!(!s.stages[0].has_expand_conv());
    assert_eq!(s.choices(Gene::Resolution), &[24, 32]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for _ in 0..100 {
        let a = sampler::uniform(&s, &mut rng);
        assert!(s.validate(&a).is_ok());
        // At r = 24: stem 12, s2 6, s3 3, s4 3; at r = 32: 16, 8, 4, 4.
        let want = if a.resolution == 24 { 3 } else { 4 };
        assert_eq!(s.head_shape(&a).size, want);
    }
}

#[test]
fn attentivenas_map_lines_in_any_key_order_are_read() {
    let s = space();
    // As a Python generator would print a sampled cfg with flops added last.
    let text = "{'resolution': 192, 'width': [16, 16, 24, 32, 64, 112, 192, 216, 1792], 'kernel_size': [3, 3, 3, 3, 3, 3, 3], 'expand_ratio': [1, 4, 4, 4, 4, 6, 6], 'depth': [1, 3, 3, 3, 3, 3, 1], 'flops': 203.389568}\n\
{'flops': 709.007232, 'resolution': 288, 'width': [16, 16, 24, 32, 64, 112, 216, 224, 1984], 'depth': [1, 3, 3, 4, 4, 6, 1], 'kernel_size': [3, 3, 3, 3, 3, 5, 3], 'expand_ratio': [1, 4, 6, 5, 4, 6, 6]}\n";
    let t = table::parse_table(&s, text, "flops_archs_off_table.map").unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!((t[0].arch.clone(), t[0].mflops), (s.named_arch("a0").unwrap(), 203.389568));
    assert_eq!((t[1].arch.clone(), t[1].mflops), (s.named_arch("a6").unwrap(), 709.007232));
}
