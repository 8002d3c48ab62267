//! The training config: spec defaults, the shipped configs, `--set` overrides, validation and the
//! fingerprint.

use std::path::{Path, PathBuf};

use attnas::data::augment::{RandomCropParams, TransformConfig};
use attnas::space::attentive::{Prior, Selection};
use attnas::space::config::{ATTENTIVENAS_YAML, TINY_YAML};
use attnas::space::table::TableMethod;
use attnas::space::Space;
use attnas::train::config::{self, KdConfig, KdLoss, SamplerMethod, Scorer, Teacher};
use attnas::train::TrainConfig;

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn attentivenas() -> (Space, TrainConfig) {
    config::from_yaml(ATTENTIVENAS_YAML, "configs/attentivenas.yaml").unwrap()
}

/// The space part of a file: everything before its `train:` section.
fn space_only(yaml: &str) -> &str {
    &yaml[..yaml.find("\ntrain:").expect("the shipped config has a train: section")]
}

fn err_of(r: attnas::Result<()>) -> attnas::Error {
    match r {
        Ok(()) => panic!("expected an error"),
        Err(e) => e,
    }
}

#[test]
fn defaults_are_the_attentivenas_recipe() {
    let c = TrainConfig::default();
    // spec 3.1
    assert_eq!((c.seed, c.epochs, c.warmup_epochs, c.batch_size), (0, 360, 5.0, 32));
    assert_eq!((c.base_lr, c.momentum, c.nesterov), (None, 0.9, true));
    assert_eq!((c.weight_decay, c.grad_clip_value, c.label_smoothing), (1e-5, Some(1.0), 0.1));
    assert_eq!(c.no_decay_keywords, [".bn", ".bias"]);
    assert_eq!((c.max_steps, c.schedule_steps), (None, None));
    // spec 3.2, 3.4
    let s = &c.sandwich;
    assert_eq!((s.num_arch_training, s.dropout, s.drop_connect), (4, 0.2, 0.2));
    assert!(s.drop_connect_only_last_two_stages);
    assert_eq!(s.teacher, Teacher::Max);
    // spec 3.2 (AttentiveNAS's KD); the alpha keys are AlphaNet's (train_alphanet_models.yml)
    let kd = &c.kd;
    assert_eq!((kd.loss, kd.alpha_min, kd.alpha_max, kd.iw_clip), (KdLoss::Kl, -1.0, 1.0, 5.0));
    // spec 4.2, 4.3
    let m = &c.sampler;
    assert_eq!((m.method, m.num_trials, m.discretize_step), (SamplerMethod::BestUp, 3, 25.0));
    assert_eq!((m.scorer, m.prior, m.table_method), (Scorer::Loss, Prior::Empirical, TableMethod::Uniform));
    assert_eq!((m.table.clone(), m.table_samples), (None, 20_000));
    assert_eq!(m.method.selection(), Some(Selection::BestUp));
    assert_eq!(SamplerMethod::Uniform.selection(), None);
    // spec 3.5, 3.6
    let d = &c.data;
    assert_eq!((d.crop, d.flip, d.autoaugment, d.holdout), (224, true, true, 10_000));
    assert_eq!(d.random_crop_scale, [0.08, 1.0]);
    assert_eq!(d.random_crop_ratio, [3.0 / 4.0, 4.0 / 3.0]);
    assert_eq!((c.bn_calib.batches, c.bn_calib.batch_size, c.bn_calib.eval_batch_size), (64, 32, 16));
    assert_eq!((c.checkpoint.every_epochs, c.checkpoint.every_steps, c.checkpoint.keep), (1, None, 3));
    assert_eq!((c.log.every_steps, c.log.progress), (1, true));
}

#[test]
fn learning_rate_decay_and_schedule_follow_the_recipe() {
    let mut c = TrainConfig::default();
    // Linear scaling: 64 GPUs x 32 = 2048 -> 0.8; one device of 32 -> 0.1; batch 2048 on one device -> 0.8.
    assert!((c.effective_base_lr(64) - 0.8).abs() < 1e-12);
    assert!((c.effective_base_lr(1) - 0.1).abs() < 1e-12);
    c.batch_size = 2048;
    assert!((c.effective_base_lr(1) - 0.8).abs() < 1e-12);
    c.base_lr = Some(0.05);
    assert_eq!(c.effective_base_lr(64), 0.05);
    // No decay on BN and biases.
    assert_eq!(c.weight_decay_for("stages.2.blocks.0.dw.bn.weight"), 0.0);
    assert_eq!(c.weight_decay_for("classifier.bias"), 0.0);
    assert_eq!(c.weight_decay_for("stages.2.blocks.0.dw.conv.weight"), 1e-5);
    // 625 iterations per epoch (spec 3.1): 3,125 warmup steps inside 225,000.
    let c = TrainConfig::default();
    assert_eq!(c.schedule_iters(625), (3_125, 225_000));
    assert_eq!(c.total_steps(625), 225_000);
    let mut short = c.clone();
    short.apply_sets(&["max_steps=100", "schedule_steps=720"]).unwrap();
    assert_eq!(short.total_steps(625), 100);
    assert_eq!(short.schedule_iters(625), (10, 720), "warmup keeps its 5/360 share of the schedule");
}

#[test]
fn loader_configs_map_the_data_section() {
    let c = TrainConfig::default();
    let l = c.train_loader_config();
    assert_eq!((l.batch_size, l.seed, l.shuffle, l.drop_last, l.prefetch, l.threads), (32, 0, true, true, 3, 0));
    assert_eq!(l.transform, TransformConfig::train(224), "the defaults are the loader's own AttentiveNAS defaults");
    let e = c.eval_loader_config();
    assert_eq!((e.batch_size, e.shuffle, e.drop_last), (16, false, false));
    assert_eq!(e.transform, TransformConfig::eval(224));
    assert_eq!(c.calib_loader_config().batch_size, 32);
    assert!(c.calib_loader_config().transform.train, "BN calibration uses training augmentation (spec 5.1)");

    let (_, tiny) = config::from_yaml(TINY_YAML, "configs/tiny.yaml").unwrap();
    let t = tiny.train_loader_config();
    assert_eq!((t.batch_size, t.transform.crop, t.transform.flip, t.transform.autoaugment), (64, 28, true, false));
    assert_eq!(t.transform.random_crop, RandomCropParams { scale: (0.95, 1.0), ratio: (0.9, 1.1) });
    assert_eq!(tiny.calib_loader_config().batch_size, 64);
    assert_eq!(tiny.eval_loader_config().transform.eval_resize(), 28, "the tiny recipe evaluates whole images");
}

/// `data.eval_crop_fraction`: the evaluation resize (crop / fraction, then the centre crop) reaches the
/// eval loader; 1.0 keeps the whole image; out-of-range values are refused naming the key; the default
/// (the original's 0.875) leaves the fingerprint of earlier runs unchanged, another value changes it.
#[test]
fn eval_crop_fraction_reaches_the_eval_loader_and_the_fingerprint() {
    let (space, base) = attentivenas();
    assert_eq!(base.eval_loader_config().transform.eval_resize(), 256);
    let mut whole = base.clone();
    whole.apply_sets(&["data.crop=28", "data.eval_crop_fraction=1.0"]).unwrap();
    whole.check(&space).unwrap();
    let e = whole.eval_loader_config().transform;
    assert_eq!((e.crop, e.eval_resize(), e.train), (28, 28, false));
    let mut crop28 = base.clone();
    crop28.apply_sets(&["data.crop=28"]).unwrap();
    assert_eq!(crop28.eval_loader_config().transform.eval_resize(), 32, "28 / 0.875");
    assert_ne!(whole.fingerprint(&space), crop28.fingerprint(&space));
    let mut explicit = crop28.clone();
    explicit.apply_sets(&["data.eval_crop_fraction=0.875"]).unwrap();
    assert_eq!(explicit.fingerprint(&space), crop28.fingerprint(&space));
    assert!(!crop28.to_value().to_string().is_empty());
    for bad in ["0", "1.5", "-0.5"] {
        let mut c = base.clone();
        c.apply_sets(&[format!("data.eval_crop_fraction={bad}")]).unwrap();
        let err = c.check(&space).unwrap_err().to_string();
        assert!(err.contains("eval_crop_fraction") && err.contains("(0, 1]"), "{err}");
    }
}

#[test]
fn the_attentivenas_file_states_the_defaults() {
    let (space, cfg) = attentivenas();
    assert_eq!(space.name, "attentivenas");
    assert_eq!(cfg, TrainConfig::default(), "configs/attentivenas.yaml train: must match the built-in defaults");
    cfg.check(&space).unwrap();
    // Without a train: section (or with an empty one) every key takes its default.
    let bare = space_only(ATTENTIVENAS_YAML);
    let (space2, cfg2) = config::from_yaml(bare, "bare.yaml").unwrap();
    assert_eq!((space2, cfg2), (space.clone(), TrainConfig::default()));
    let (_, cfg3) = config::from_yaml(&format!("{bare}\ntrain:\n"), "empty.yaml").unwrap();
    assert_eq!(cfg3, TrainConfig::default());
}

#[test]
fn both_shipped_configs_load_from_disk() {
    let (space, cfg) = config::load_config(&repo_file("configs/attentivenas.yaml")).unwrap();
    assert_eq!((space.name.as_str(), cfg.epochs), ("attentivenas", 360));
    let (space, cfg) = config::load_config(&repo_file("configs/tiny.yaml")).unwrap();
    assert_eq!((space.name.as_str(), space.in_channels), ("tiny", 3));
    assert_eq!((cfg.epochs, cfg.batch_size, cfg.base_lr, cfg.data.crop), (3, 64, Some(0.1), 28));
    assert_eq!((cfg.data.holdout, cfg.bn_calib.batches, cfg.checkpoint.keep), (2000, 8, 2));
    assert!(!cfg.data.autoaugment);
    // Keys the tiny file does not give keep the recipe's defaults.
    assert_eq!((cfg.sampler.num_trials, cfg.momentum, cfg.sampler.discretize_step), (3, 0.9, 0.05));
    // The short-run departures (docs/training.md, "The tiny recipe").
    assert_eq!((cfg.label_smoothing, cfg.sandwich.num_arch_training), (0.0, 3));
    assert_eq!((cfg.sandwich.dropout, cfg.sandwich.drop_connect, cfg.data.eval_crop_fraction), (0.0, 0.0, 1.0));
    cfg.check(&space).unwrap();
    // The space readers accept (and ignore) the train: section.
    let path = repo_file("configs/tiny.yaml");
    assert_eq!(Space::load(&path).unwrap(), space);
    assert_eq!(Space::resolve(path.to_str().unwrap()).unwrap(), space);
    assert_eq!(Space::builtin("tiny").unwrap(), space);
    // With overrides and validation, as `attnas train` reads them.
    let sets = vec!["sampler.num_trials=5".to_string()];
    let (_, cfg) = config::load_with_overrides(&path, &sets).unwrap();
    assert_eq!(cfg.sampler.num_trials, 5);
    let bad = vec!["sampler.num_trials=0".to_string()];
    assert!(config::load_with_overrides(&path, &bad).unwrap_err().to_string().contains("num_trials"));
}

#[test]
fn unknown_or_mistyped_keys_in_the_file_are_errors() {
    let bare = space_only(TINY_YAML);
    let cases = [
        ("train:\n  sampler:\n    num_trial: 5\n", "unknown field `num_trial`"),
        ("train:\n  epoch: 5\n", "unknown field `epoch`"),
        ("train:\n  sampler:\n    method: bestest\n", "unknown variant `bestest`"),
        ("train:\n  data:\n    random_crop_scale: [0.5]\n", "random_crop_scale"),
        ("train:\n  batch_size: many\n", "batch_size"),
    ];
    for (section, want) in cases {
        let e = config::from_yaml(&format!("{bare}\n{section}"), "t.yaml").unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with("t.yaml: ") && msg.contains(want), "got '{msg}', want '{want}'");
    }
    // A misspelt section name is caught by the space's own key check.
    let e = config::from_yaml(&format!("{bare}\ntrian:\n  epochs: 3\n"), "t.yaml").unwrap_err();
    assert!(e.to_string().contains("unknown field `trian`"), "{e}");
}

#[test]
fn set_overrides_nested_keys() {
    let mut c = TrainConfig::default();
    c.apply_sets(&[
        "sampler.num_trials=5",
        "train.data.random_crop_scale=[0.35, 1]",
        "sampler.method=worstup",
        "sampler.prior=uniform",
        "grad_clip_value=null",
        "base_lr=0.4",
        "warmup_epochs=0.5",
        "weight_decay=4e-5",
        "data.eval_split=2024",
        "sampler.table=tables/flops.map",
        "checkpoint.every_steps=500",
        "no_decay_keywords=[.bn]",
        "sandwich.drop_connect_only_last_two_stages=false",
    ])
    .unwrap();
    assert_eq!(c.sampler.num_trials, 5);
    assert_eq!(c.data.random_crop_scale, [0.35, 1.0]);
    assert_eq!((c.sampler.method, c.sampler.prior), (SamplerMethod::WorstUp, Prior::UniformBins));
    assert_eq!((c.grad_clip_value, c.base_lr, c.warmup_epochs, c.weight_decay), (None, Some(0.4), 0.5, 4e-5));
    assert_eq!(c.data.eval_split, Some(PathBuf::from("2024")), "a number where a path is wanted is the path");
    assert_eq!(c.sampler.table, Some(PathBuf::from("tables/flops.map")));
    assert_eq!((c.checkpoint.every_steps, c.no_decay_keywords.clone()), (Some(500), vec![".bn".to_string()]));
    assert!(!c.sandwich.drop_connect_only_last_two_stages);
    // Everything else is untouched, and a later set wins.
    assert_eq!((c.epochs, c.sandwich.num_arch_training), (360, 4));
    c.apply_sets(&["sampler.num_trials=2", "data.eval_split="]).unwrap();
    assert_eq!((c.sampler.num_trials, c.data.eval_split.clone()), (2, None));
}

#[test]
fn set_rejects_unknown_keys_naming_the_valid_ones() {
    let mut c = TrainConfig::default();
    let before = c.clone();
    let cases = [
        ("sampler.num_trial=5", &["unknown key train.sampler.num_trial", "train.sampler.num_trials"][..]),
        ("bogus=1", &["unknown key train.bogus", "train.seed", "train.sandwich", "train.log"]),
        ("train.data.crops=28", &["unknown key train.data.crops", "train.data.crop", "train.data.holdout"]),
        ("seed.value=1", &["train.seed is a value"]),
        ("sampler=uniform", &["train.sampler is a section", "train.sampler.method"]),
        ("sampler.num_trials", &["expected key=value"]),
        ("sampler..num_trials=1", &["not a dotted key path"]),
    ];
    for (set, wants) in cases {
        let e = err_of(c.apply_set(set));
        assert_eq!(e.exit_code(), 2, "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("--set {set}: ")), "{msg}");
        for want in wants {
            assert!(msg.contains(want), "--set {set}: got '{msg}', want '{want}'");
        }
    }
    assert_eq!(c, before, "a failed --set leaves the config unchanged");
}

#[test]
fn set_rejects_bad_types_naming_the_key() {
    let mut c = TrainConfig::default();
    let cases = [
        ("sampler.num_trials=abc", &["bad value for train.sampler.num_trials", "invalid type"][..]),
        ("sampler.num_trials=-1", &["train.sampler.num_trials"]),
        ("sampler.method=bestest", &["train.sampler.method", "unknown variant `bestest`", "worstup"]),
        ("data.random_crop_scale=[0.5]", &["train.data.random_crop_scale"]),
        ("log.progress=sometimes", &["train.log.progress"]),
        ("kd.loss=mse", &["train.kd.loss", "alpha_divergence"]),
        ("epochs=[1, 2", &["not valid YAML"]),
    ];
    for (set, wants) in cases {
        let msg = err_of(c.apply_set(set)).to_string();
        for want in wants {
            assert!(msg.contains(want), "--set {set}: got '{msg}', want '{want}'");
        }
    }
}

#[test]
fn validation_names_the_key_and_the_value() {
    let (space, base) = attentivenas();
    let cases = [
        ("sampler.num_trials=0", "train.sampler.num_trials must be >= 1, got 0"),
        ("sandwich.num_arch_training=1", "train.sandwich.num_arch_training must be >= 2, got 1"),
        ("kd.iw_clip=0", "train.kd.iw_clip must be a finite number > 0, got 0"),
        ("kd.alpha_max=.nan", "train.kd.alpha_max must be a finite alpha"),
        ("sandwich.dropout=1.0", "train.sandwich.dropout must be in [0, 1), got 1"),
        ("sandwich.drop_connect=-0.1", "train.sandwich.drop_connect must be in [0, 1)"),
        ("label_smoothing=1.5", "train.label_smoothing must be in [0, 1), got 1.5"),
        ("momentum=1", "train.momentum must be in [0, 1)"),
        ("batch_size=0", "train.batch_size must be >= 1, got 0"),
        ("epochs=0", "train.epochs must be >= 1, got 0"),
        ("warmup_epochs=400", "train.warmup_epochs must be in [0, epochs = 360]"),
        ("base_lr=0", "train.base_lr must be a finite number > 0, got 0"),
        ("grad_clip_value=-1", "train.grad_clip_value must be a finite number > 0"),
        ("weight_decay=-1e-5", "train.weight_decay must be a finite number >= 0"),
        ("data.random_crop_scale=[0.9, 0.5]", "train.data.random_crop_scale must be [lo, hi] with 0 < lo < hi <= 1"),
        ("data.random_crop_scale=[0.5, 1.5]", "train.data.random_crop_scale must be [lo, hi]"),
        ("data.random_crop_ratio=[0, 1]", "train.data.random_crop_ratio must be [lo, hi] with 0 < lo < hi"),
        ("data.crop=0", "train.data.crop must be >= 1"),
        ("data.prefetch=0", "train.data.prefetch must be >= 1"),
        ("data.holdout=0", "train.data.holdout must be >= 1 when train.data.eval_split is null"),
        ("bn_calib.batches=0", "train.bn_calib.batches must be >= 1"),
        ("bn_calib.eval_batch_size=0", "train.bn_calib.eval_batch_size must be >= 1"),
        ("checkpoint.keep=0", "train.checkpoint.keep must be >= 1"),
        ("checkpoint.every_steps=0", "train.checkpoint.every_steps must be >= 1 or null"),
        ("max_steps=0", "train.max_steps must be >= 1 or null"),
        ("log.every_steps=0", "train.log.every_steps must be >= 1"),
        ("sampler.table_samples=1", "train.sampler.table_samples must be >= 2"),
        ("sampler.discretize_step=0", "train.sampler.discretize_step must be a finite number > 0"),
        ("sampler.discretize_step=5000", "puts all of space 'attentivenas' (203.39 to 1939.34 MFLOPs) in one bin"),
        ("no_decay_keywords=['.bn', '']", "train.no_decay_keywords must not hold an empty string"),
    ];
    for (set, want) in cases {
        let mut c = base.clone();
        c.apply_set(set).unwrap();
        let e = err_of(c.check(&space));
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains(want), "--set {set}: got '{e}', want '{want}'");
    }
    // Legal edge values pass.
    let mut ok = base.clone();
    ok.apply_sets(&["warmup_epochs=360", "data.holdout=0", "data.eval_split=val.pack", "sampler.method=uniform"])
        .unwrap();
    ok.apply_sets(&["sampler.discretize_step=5000", "grad_clip_value=null", "checkpoint.every_epochs=0"]).unwrap();
    ok.check(&space).unwrap();
    // Every problem is reported, one per line.
    let mut two = base.clone();
    two.apply_sets(&["sampler.num_trials=0", "batch_size=0"]).unwrap();
    let msg = err_of(two.check(&space)).to_string();
    assert_eq!(msg.lines().count(), 2, "{msg}");
    // The loader delivers RGB: a 1-channel space cannot be trained.
    let grey = Space::from_yaml(&TINY_YAML.replace("in_channels: 3", "in_channels: 1"), "grey.yaml").unwrap();
    let (_, tiny) = config::from_yaml(TINY_YAML, "tiny.yaml").unwrap();
    let msg = err_of(tiny.check(&grey)).to_string();
    assert!(msg.contains("has in_channels: 1") && msg.contains("set in_channels: 3"), "{msg}");
}

#[test]
fn fingerprint_tracks_the_recipe_and_the_space() {
    let (space, base) = attentivenas();
    let fp = base.fingerprint(&space);
    assert_eq!(fp.len(), 32);
    assert!(fp.chars().all(|c| c.is_ascii_hexdigit()), "{fp}");
    assert_eq!(fp, TrainConfig::default().fingerprint(&space), "deterministic");
    // The stored form reads back to the same config and fingerprint.
    let stored = TrainConfig::from_value(base.to_value()).unwrap();
    assert_eq!(stored, base);
    assert_eq!(stored.fingerprint(&space), fp);
    let via_yaml: TrainConfig = serde_yaml_ng::from_str(&base.to_yaml()).unwrap();
    assert_eq!(via_yaml, base);
    // A config stored before the kd section (`sandwich.kd: soft_ce`) reads back as the default KL.
    let mut old = base.to_value();
    old.as_object_mut().unwrap().remove("kd");
    old["sandwich"].as_object_mut().unwrap().insert("kd".into(), "soft_ce".into());
    assert_eq!(TrainConfig::from_value(old).unwrap(), base);
    // The alpha keys count only with the alpha-divergence loss.
    let mut alpha = base.clone();
    alpha.apply_set("kd.alpha_min=-0.5").unwrap();
    assert_eq!(alpha.fingerprint(&space), fp, "alpha keys are unused with kd.loss = kl");
    alpha.apply_set("kd.loss=alpha_divergence").unwrap();
    let alpha_fp = alpha.fingerprint(&space);
    assert_ne!(alpha_fp, fp);
    alpha.apply_set("kd.iw_clip=4").unwrap();
    assert_ne!(alpha.fingerprint(&space), alpha_fp);
    assert_eq!(KdConfig::default().loss, KdLoss::Kl);
    // Any recipe key changes it.
    for set in ["sampler.num_trials=5", "seed=1", "base_lr=0.8", "data.autoaugment=false", "bn_calib.batches=32"] {
        let mut c = base.clone();
        c.apply_set(set).unwrap();
        assert_ne!(c.fingerprint(&space), fp, "--set {set} must change the fingerprint");
    }
    // Keys that only say how the run executes or reports do not.
    for set in ["max_steps=1000", "data.threads=4", "log.every_steps=50", "checkpoint.keep=9", "log.progress=false"] {
        let mut c = base.clone();
        c.apply_set(set).unwrap();
        assert_eq!(c.fingerprint(&space), fp, "--set {set} must not change the fingerprint");
    }
    // Same recipe, another space.
    let tiny = Space::builtin("tiny").unwrap();
    assert_ne!(base.fingerprint(&tiny), fp);
    let wider = Space::from_yaml(&TINY_YAML.replace("width: [64, 96]", "width: [64, 128]"), "w.yaml").unwrap();
    assert_ne!(base.fingerprint(&wider), base.fingerprint(&tiny));
}
