//! The trainer across epoch boundaries, in process on the CPU, on a tiny raw pack written here (40
//! training and 16 validation images of 16 x 16, batch 8: 5 steps per epoch, 3 epochs, uniform middle
//! subnets):
//! - **per-epoch order**: every step of the trainer trains on the batch the loader gives for that step's
//!   epoch and position (an independent loop of `StepState` over `Loader::epoch(e)` reproduces the
//!   trainer's losses bit for bit), and those epochs' index orders are different permutations of the
//!   40 records (indices, not pixels: the pixels differ anyway, augmentation being keyed on the epoch);
//! - **epoch ends**: a validation record of the min and max subnets and a checkpoint (state `epoch`,
//!   `step`) after each epoch;
//! - **resume**: a run stopped exactly at an epoch boundary (step 5) and one stopped inside the second
//!   epoch (step 8) and resumed give the uninterrupted run's losses, learning rates, validation results
//!   and final weights bit for bit.
//!
//! Runs in about 5 s (up to 20 s on a busy 2-core machine): ~60 steps of the tiny supernet on 8 images
//! plus 8 validations.

mod data_common;

use std::path::Path;
use std::sync::Arc;

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::optimizer::WarmupCosineLr;
use attnas::backend::Arena;
use attnas::checkpoint::{load, CheckpointStore};
use attnas::data::augment::normalize_nhwc;
use attnas::data::loader::Loader;
use attnas::data::PackedDataset;
use attnas::nn::{activation_arena_len, Supernet};
use attnas::space::Space;
use attnas::train::config::from_yaml;
use attnas::train::metrics::{read_log, EpochRecord, LogLine, StepRecord};
use attnas::train::step::{CandidateScorer, MiddleSampling, StepBuffers, StepSettings, StepState};
use attnas::train::trainer::{run, TrainJob};
use attnas::train::TrainConfig;
use data_common::{raw_pack, scratch};
use rand::{RngExt, SeedableRng};

const TRAIN: usize = 40;
const VAL: usize = 16;
const SIDE: u32 = 16;
const STEPS_PER_EPOCH: u64 = 5;
const EPOCHS: u64 = 3;
/// The tiny space and recipe, built in (the test also runs from the GPU bundle, far from the checkout).
const CONFIG: &str = include_str!("../configs/tiny.yaml");
const SETS: &[&str] = &[
    "epochs=3",
    "batch_size=8",
    "data.crop=16",
    "data.threads=1",
    "sampler.method=uniform",
    "bn_calib.batches=1",
    "bn_calib.batch_size=8",
    "bn_calib.eval_batch_size=8",
    "bn_calib.eval_images=16",
    "checkpoint.every_epochs=1",
    "checkpoint.keep=10",
    "log.progress=false",
];

/// `train.pack` and `val.pack` of random grey 16 x 16 images with labels 0..9 in turn.
fn write_packs(dir: &Path) {
    let classes: Vec<String> = (0..10).map(|c| format!("class{c}")).collect();
    let names: Vec<&str> = classes.iter().map(String::as_str).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for (file, n) in [("train.pack", TRAIN), ("val.pack", VAL)] {
        let records: Vec<(u32, u32, u32, Vec<u8>)> = (0..n)
            .map(|i| {
                let px: Vec<u8> = (0..SIDE * SIDE).map(|_| rng.random_range(0..=255u8)).collect();
                ((i % 10) as u32, SIDE, SIDE, px)
            })
            .collect();
        std::fs::write(dir.join(file), raw_pack(&names, &records)).unwrap();
    }
}

fn config(extra: &[&str]) -> (Space, TrainConfig) {
    let (space, mut cfg) = from_yaml(CONFIG, "configs/tiny.yaml").unwrap();
    cfg.apply_sets(&SETS.iter().chain(extra).collect::<Vec<_>>()).unwrap();
    cfg.check(&space).unwrap();
    (space, cfg)
}

/// One `attnas train` run in process on the CPU.
fn train(data: &Path, out: &Path, extra: &[&str], resume: bool) {
    let (space, config) = config(extra);
    let job = TrainJob {
        space,
        space_yaml: CONFIG.to_string(),
        config,
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        resume,
        init: None,
        start_if_empty: false,
        stop: attnas::train::stop::StopRequest::never(),
        overwrite: false,
        progress: false,
        ranks: attnas::dist::single(),
    };
    run(&CpuBackend::new(), &job).unwrap();
}

fn records(out: &Path) -> (Vec<StepRecord>, Vec<EpochRecord>) {
    let (mut steps, mut epochs) = (Vec::new(), Vec::new());
    for line in read_log(&out.join("metrics.jsonl")).unwrap() {
        match line {
            LogLine::Step(s) => steps.push(s),
            LogLine::Epoch(e) => epochs.push(e),
            _ => {}
        }
    }
    (steps, epochs)
}

fn loss_bits(r: &StepRecord) -> Vec<u64> {
    r.subnets.iter().map(|s| s.loss.to_bits()).collect()
}

/// (epoch, step, per subnet: top-1 and top-5 bits) of a validation record.
fn eval_key(e: &EpochRecord) -> (u64, u64, Vec<(u64, u64)>) {
    (e.epoch, e.step, e.subnets.iter().map(|s| (s.top1.to_bits(), s.top5.to_bits())).collect())
}

/// The weights of the newest checkpoint in `out`, by name.
fn final_weights(out: &Path) -> Vec<(String, Vec<u32>)> {
    let ck = CheckpointStore::new(out.join("checkpoints"), 10).unwrap().latest().unwrap().expect("a checkpoint");
    assert_eq!(ck.step, STEPS_PER_EPOCH * EPOCHS);
    let (tensors, _, _) = load(&ck).unwrap();
    tensors.into_iter().map(|t| (t.name, t.data.iter().map(|v| v.to_bits()).collect())).collect()
}

/// The training loop written out independently of the trainer: `StepState` over the loader's epochs in
/// order. Returns each step's subnet losses and each epoch's index order.
fn independent_loop(data: &Path) -> (Vec<Vec<u64>>, Vec<Vec<u32>>) {
    let (space, cfg) = config(&[]);
    let b = CpuBackend::new();
    let ds = Arc::new(PackedDataset::open(data.join("train.pack")).unwrap());
    let loader = Loader::new(ds, cfg.train_loader_config()).unwrap();
    assert_eq!(loader.batches_per_epoch() as u64, STEPS_PER_EPOCH);
    let net = Supernet::new(&b, space.clone(), cfg.seed).unwrap();
    let side = cfg.data.crop as usize;
    let mut arena = Arena::new(
        &b,
        "act",
        activation_arena_len(&space, cfg.batch_size, side, true, attnas::backend::Dtype::F32).unwrap(),
    )
    .unwrap();
    let bufs = StepBuffers::new(&b, cfg.batch_size, side, space.num_classes).unwrap();
    let groups = net.param_groups(cfg.weight_decay as f32, &cfg.no_decay_keywords).unwrap();
    let (warmup, total) = cfg.schedule_iters(STEPS_PER_EPOCH);
    let schedule = WarmupCosineLr::new(cfg.effective_base_lr(1), warmup, total).unwrap();
    let s = StepSettings {
        label_smoothing: cfg.label_smoothing as f32,
        dropout: cfg.sandwich.dropout as f32,
        drop_connect: cfg.sandwich.drop_connect as f32,
        drop_connect_only_last_two_stages: cfg.sandwich.drop_connect_only_last_two_stages,
        kd: cfg.kd.distillation(),
        num_arch_training: cfg.sandwich.num_arch_training,
        sampling: MiddleSampling::Uniform,
        num_trials: cfg.sampler.num_trials,
        scorer: CandidateScorer::Loss,
        momentum: cfg.momentum as f32,
        clip: cfg.grad_clip_value.map_or(f32::INFINITY, |c| c as f32),
        seed: cfg.seed,
    };
    let (mut losses, mut orders) = (Vec::new(), Vec::new());
    let mut step = 0u64;
    for epoch in 0..EPOCHS {
        let mut order = Vec::new();
        for batch in loader.epoch(epoch).unwrap() {
            order.extend_from_slice(&batch.indices);
            bufs.upload(&b, &normalize_nhwc(&batch.images), &batch.labels).unwrap();
            let mut st = StepState { b: &b, net: &net, arena: &mut arena, bufs: &bufs, groups: &groups, sampler: None };
            let out = st.run(step, schedule.lr(step), &s).unwrap();
            losses.push(out.subnets.iter().map(|s| s.loss.to_bits()).collect());
            step += 1;
        }
        orders.push(order);
    }
    (losses, orders)
}

#[test]
fn epochs_reshuffle_validate_checkpoint_and_resume_exactly() {
    let root = scratch("train-epochs");
    write_packs(&root);
    let (a, b, c) = (root.join("a"), root.join("b"), root.join("c"));

    // uninterrupted: 3 epochs
    train(&root, &a, &[], false);
    let (steps_a, epochs_a) = records(&a);
    assert_eq!(steps_a.iter().map(|r| r.step).collect::<Vec<_>>(), (1..=15).collect::<Vec<_>>());
    assert_eq!(steps_a.iter().map(|r| r.epoch).collect::<Vec<_>>(), [[0; 5], [1; 5], [2; 5]].concat());

    // every step trained on the loader's batch for its epoch; the epochs' orders differ
    let (losses, orders) = independent_loop(&root);
    for (r, want) in steps_a.iter().zip(&losses) {
        assert_eq!(&loss_bits(r), want, "step {} (epoch {}): not the loader's batch for this epoch", r.step, r.epoch);
    }
    for (e, order) in orders.iter().enumerate() {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..TRAIN as u32).collect::<Vec<_>>(), "epoch {e} visits every record once");
    }
    assert!(orders[0] != orders[1] && orders[1] != orders[2] && orders[0] != orders[2], "each epoch reshuffles");
    assert!(steps_a.windows(2).all(|w| loss_bits(&w[0]) != loss_bits(&w[1])), "losses change step to step");

    // a validation and a checkpoint at each epoch end
    let ends: Vec<(u64, u64)> = epochs_a.iter().map(|e| (e.epoch, e.step)).collect();
    assert_eq!(ends, [(0, 5), (1, 10), (2, 15)]);
    for e in &epochs_a {
        let roles: Vec<&str> = e.subnets.iter().map(|s| s.role.name()).collect();
        assert_eq!(roles, ["max", "min"]);
        assert!(e.subnets.iter().all(|s| s.images == VAL as u64 && (0.0..=100.0).contains(&s.top1)));
        assert_eq!((e.calib_batches, e.calib_images), (1, 8));
    }
    let saved = CheckpointStore::new(a.join("checkpoints"), 10).unwrap().list().unwrap();
    let saved: Vec<(u64, u64)> = saved
        .iter()
        .map(|ck| {
            let (_, _, state) = load(ck).unwrap();
            (ck.step, state["epoch"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(saved, [(5, 0), (10, 1), (15, 2)]);

    // stopped at the epoch boundary (b) and inside the second epoch (c), then resumed
    for (dir, stop) in [(&b, 5u64), (&c, 8)] {
        train(&root, dir, &[&format!("max_steps={stop}")], false);
        assert_eq!(records(dir).0.len() as u64, stop);
        train(&root, dir, &[], true);
        let (steps, epochs) = records(dir);
        assert_eq!(steps.iter().map(|r| r.step).collect::<Vec<_>>(), (1..=15).collect::<Vec<_>>(), "stop {stop}");
        for (x, y) in steps_a.iter().zip(&steps) {
            assert_eq!(loss_bits(x), loss_bits(y), "stop {stop}: step {} differs after resuming", x.step);
            assert_eq!(x.lr.to_bits(), y.lr.to_bits(), "stop {stop}: learning rate of step {}", x.step);
        }
        // every epoch-end validation of the uninterrupted run, with the same results
        let got: Vec<_> = epochs.iter().map(eval_key).collect();
        for want in epochs_a.iter().map(eval_key) {
            assert!(
                got.contains(&want),
                "stop {stop}: validation {:?} missing or different: {got:?}",
                (want.0, want.1)
            );
        }
        assert!(
            final_weights(dir) == final_weights(&a),
            "stop {stop}: final weights differ from the uninterrupted run"
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}
