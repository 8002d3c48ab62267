//! Runs that survive clusters, on the binary under test (`ATTNAS_BIN`, else cargo's) with real signals: SIGTERM and SIGINT
//! stop after the step in progress with a checkpoint at that step and exit 0, and the resumed run is
//! bit-identical to an uninterrupted one; a second signal exits at once with 128 + its number; the run
//! lock refuses a second process and takes over a dead one's; `--resume` skips a truncated and a
//! bit-flipped newest checkpoint and `eval` / `export` refuse them; `--resume auto`; a full disk (a small
//! tmpfs) and an unwritable checkpoint path stop the run naming the file and the bytes, earlier
//! checkpoints intact. Tiny space, Fashion-MNIST, batch 16, a few steps per run.

mod survival_common;
mod train_common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use attnas::checkpoint::{load_checked, read_safetensors, DigestCheck, DIGEST_KEY};
use attnas::train::metrics::{read_log, LogLine, StartRecord, StopRecord};
use survival_common::{flip_bit_near_end, Tmpfs};
use train_common::{attnas_bin, fashion_mnist_packed, fresh_dir, steps, train};

/// Every run: batch 16, a 10-step LR schedule, tiny validation.
const BASE: &[&str] =
    &["batch_size=16", "schedule_steps=10", "bn_calib.batches=1", "bn_calib.batch_size=16", "bn_calib.eval_images=64"];
/// Cheaper runs where the sampler does not matter.
const UNIFORM: &str = "sampler.method=uniform";

fn sets<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    BASE.iter().copied().chain(extra.iter().copied()).collect()
}

fn stderr_of(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `attnas train` in the background, stdout and stderr to files beside `out`.
struct Running {
    child: Child,
    out: PathBuf,
    stderr: PathBuf,
}

impl Running {
    fn start(data: &Path, out: &Path, sets: &[&str], extra: &[&str]) -> Running {
        let stderr = out.with_extension("stderr");
        let mut cmd = Command::new(attnas_bin());
        cmd.args(["train", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/configs/tiny.yaml"), "--device", "cpu"]);
        cmd.arg("--data").arg(data).arg("--out").arg(out).arg("--quiet");
        for s in sets {
            cmd.args(["--set", s]);
        }
        cmd.args(extra).stdin(Stdio::null());
        cmd.stdout(File::create(out.with_extension("stdout")).unwrap());
        cmd.stderr(File::create(&stderr).unwrap());
        Running { child: cmd.spawn().expect("start attnas train"), out: out.to_path_buf(), stderr }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the metrics log holds at least `n` step lines (the run is past start-up).
    fn wait_for_steps(&mut self, n: usize) {
        let log = self.out.join("metrics.jsonl");
        let t0 = Instant::now();
        loop {
            let done = fs::read_to_string(&log).map_or(0, |t| t.matches("\"kind\":\"step\"").count());
            if done >= n {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("train exited ({status}) before step {n}: {}", self.stderr_text());
            }
            assert!(t0.elapsed() < Duration::from_secs(300), "no step {n} after 300 s: {}", self.stderr_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
        assert!(ok.success(), "kill -{sig} {}", self.pid());
    }

    fn wait(&mut self) -> ExitStatus {
        self.child.wait().unwrap()
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill(); // a failed assertion must not leave a trainer running
        let _ = self.child.wait();
    }
}

fn stops(out: &Path) -> Vec<StopRecord> {
    log_lines(out).into_iter().filter_map(|l| if let LogLine::Stop(s) = l { Some(s) } else { None }).collect()
}

fn starts(out: &Path) -> Vec<StartRecord> {
    log_lines(out).into_iter().filter_map(|l| if let LogLine::Start(s) = l { Some(s) } else { None }).collect()
}

fn log_lines(out: &Path) -> Vec<LogLine> {
    read_log(&out.join("metrics.jsonl")).expect("read metrics.jsonl")
}

fn ckpt(out: &Path, step: u64) -> PathBuf {
    out.join("checkpoints").join(format!("ckpt-{step:09}.safetensors"))
}

fn loss_bits(out: &Path) -> Vec<(u64, Vec<u64>)> {
    steps(&out.join("metrics.jsonl"))
        .iter()
        .map(|r| (r.step, r.subnets.iter().map(|s| s.loss.to_bits()).collect()))
        .collect()
}

/// The uninterrupted 10-step run (the default attentive sampler) the interrupted ones must reproduce.
fn reference(data: &Path) -> &'static Path {
    static REF: OnceLock<PathBuf> = OnceLock::new();
    REF.get_or_init(|| {
        let out = fresh_dir("survive-reference");
        let o = train(data, &out, &sets(&["max_steps=10"]), &[]);
        assert!(o.status.success(), "{}", stderr_of(&o));
        out
    })
}

/// A signal mid-run: exit 0, a checkpoint at the stop step, a `stop` line; then `--resume` to step 10
/// gives the reference's losses and final weights bit for bit.
fn stop_then_resume_matches_the_uninterrupted_run(sig: &str, name: &str) {
    let Some(data) = fashion_mnist_packed(name) else { return };
    let reference = reference(&data);
    let out = fresh_dir(name);
    // Room for 1000 steps: the signal always lands mid-run; the schedule (10 steps) is the reference's.
    let mut run = Running::start(&data, &out, &sets(&["max_steps=1000"]), &[]);
    run.wait_for_steps(2);
    run.signal(sig);
    let status = run.wait();
    let err = run.stderr_text();
    assert_eq!(status.code(), Some(0), "a clean stop exits 0: {err}");
    assert!(err.contains(&format!("attnas: {sig} received")), "the signal is acknowledged at once: {err}");
    let stop = stops(&out);
    assert_eq!(stop.len(), 1, "one stop line");
    let s = stop[0].step;
    assert_eq!(stop[0].reason, sig);
    assert!((2..10).contains(&s), "stopped at step {s}: the run must stop soon after the signal");
    let at_stop = ckpt(&out, s);
    assert_eq!(stop[0].checkpoint.as_deref(), Some(at_stop.to_str().unwrap()), "the stop line names its checkpoint");
    let l = load_checked(&attnas::checkpoint::resolve_ckpt_arg(&at_stop).unwrap()).unwrap();
    assert_eq!(l.digest, DigestCheck::Verified);
    assert_eq!(l.state["step"], serde_json::json!(s));
    assert_eq!(steps(&out.join("metrics.jsonl")).last().unwrap().step, s, "no step after the stop");
    let lock = fs::read_to_string(out.join(".lock")).unwrap();
    assert!(lock.is_empty(), "a clean exit releases the lock: {lock}");

    let o = train(&data, &out, &sets(&["max_steps=10"]), &["--resume"]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(starts(&out).last().unwrap().step, s, "resumed from the stop step");
    let (a, b) = (loss_bits(reference), loss_bits(&out));
    assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>(), "each step logged once");
    assert_eq!(a, b, "losses of the resumed run differ from the uninterrupted run's");
    assert!(a.windows(2).any(|w| w[0].1 != w[1].1), "losses vary: the comparison is not vacuous");
    let (wa, _) = read_safetensors(&ckpt(reference, 10)).unwrap();
    let (wb, _) = read_safetensors(&ckpt(&out, 10)).unwrap();
    assert_eq!(wa.len(), wb.len());
    for (x, y) in wa.iter().zip(&wb) {
        assert_eq!(x.name, y.name);
        let bits = |t: &attnas::checkpoint::TensorRecord| t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert!(bits(x) == bits(y), "final weights differ in {}", x.name);
    }
    let digest = |out: &Path| -> serde_json::Value {
        let p = ckpt(out, 10).with_extension("").with_extension("state.json");
        serde_json::from_slice::<serde_json::Value>(&fs::read(p).unwrap()).unwrap()[DIGEST_KEY].clone()
    };
    assert_eq!(digest(reference), digest(&out));
}

#[test]
fn sigterm_checkpoints_the_stop_step_and_resume_is_bit_identical() {
    stop_then_resume_matches_the_uninterrupted_run("SIGTERM", "survive-sigterm");
}

#[test]
fn sigint_checkpoints_the_stop_step_and_resume_is_bit_identical() {
    stop_then_resume_matches_the_uninterrupted_run("SIGINT", "survive-sigint");
}

#[test]
fn a_second_signal_exits_at_once_with_128_plus_its_number() {
    let Some(data) = fashion_mnist_packed("survive-second-signal") else { return };
    let out = fresh_dir("survive-second-signal");
    let mut run = Running::start(&data, &out, &sets(&["max_steps=1000", UNIFORM]), &[]);
    run.wait_for_steps(1);
    // Stopped, the process holds both signals pending; on SIGCONT one is delivered first (the stop
    // request), the other second (exit at once), whatever the order or the threads that take them.
    run.signal("STOP");
    run.signal("TERM");
    run.signal("INT");
    run.signal("CONT");
    let code = run.wait().code();
    assert!(code == Some(130) || code == Some(143), "exit code {code:?}: {}", run.stderr_text());
    assert!(stops(&out).is_empty(), "exited at once: no stop checkpoint, no stop line");
}

#[test]
fn a_second_process_on_a_locked_folder_is_refused_naming_the_holder() {
    let Some(data) = fashion_mnist_packed("survive-lock") else { return };
    let out = fresh_dir("survive-lock");
    let s = sets(&["max_steps=1000", UNIFORM, "checkpoint.every_steps=1"]);
    let mut first = Running::start(&data, &out, &s, &[]);
    first.wait_for_steps(2);
    let host = attnas::train::run_lock::this_host();
    for extra in [&["--overwrite"][..], &["--resume"], &["--resume", "auto"], &[]] {
        let o = train(&data, &out, &s, extra);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr_of(&o));
        let err = stderr_of(&o);
        assert!(err.contains(&format!("pid {} on host {host}", first.pid())), "{extra:?}: {err}");
        assert!(err.contains(".lock") && err.contains("in use"), "{err}");
    }
    // The holder was not disturbed: it stops cleanly with its whole log and its checkpoints.
    first.signal("TERM");
    assert_eq!(first.wait().code(), Some(0), "{}", first.stderr_text());
    let st = stops(&out)[0].step;
    let logged: Vec<u64> = steps(&out.join("metrics.jsonl")).iter().map(|r| r.step).collect();
    assert_eq!(logged, (1..=st).collect::<Vec<_>>(), "the first run's log is whole");
    assert!(ckpt(&out, st).is_file() && ckpt(&out, st - 1).is_file(), "its checkpoints are still there");
}

#[test]
fn a_killed_runs_stale_lock_is_taken_over_with_a_notice() {
    let Some(data) = fashion_mnist_packed("survive-stale-lock") else { return };
    let out = fresh_dir("survive-stale-lock");
    let s = sets(&["max_steps=1000", UNIFORM, "checkpoint.every_steps=2"]);
    let mut first = Running::start(&data, &out, &s, &[]);
    first.wait_for_steps(3);
    let pid = first.pid();
    first.signal("KILL");
    first.wait();
    let lock = fs::read_to_string(out.join(".lock")).unwrap();
    assert!(lock.contains(&format!("pid: {pid}")), "the dead process's text stays: {lock}");
    let o = train(&data, &out, &sets(&["max_steps=4", UNIFORM, "checkpoint.every_steps=2"]), &["--resume"]);
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains(&format!("stale lock of pid {pid}")), "{err}");
    assert_eq!(fs::read_to_string(out.join(".lock")).unwrap(), "", "released at the end");
}

#[test]
fn resume_skips_a_truncated_and_a_bit_flipped_checkpoint_and_eval_export_refuse_them() {
    let Some(data) = fashion_mnist_packed("survive-damaged") else { return };
    let out = fresh_dir("survive-damaged");
    let every2 = ["checkpoint.every_steps=2", "checkpoint.keep=3", UNIFORM];
    let o = train(&data, &out, &sets(&[&["max_steps=6"][..], &every2].concat()), &[]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    // Step 6 cut off (an interrupted copy), one bit of a float flipped in step 4.
    let w6 = ckpt(&out, 6);
    let len = fs::metadata(&w6).unwrap().len();
    fs::OpenOptions::new().write(true).open(&w6).unwrap().set_len(len / 2).unwrap();
    flip_bit_near_end(&ckpt(&out, 4), 2);

    // eval and export refuse each damaged file, naming the reason.
    for (w, why) in [(&w6, "truncated"), (&ckpt(&out, 4), "damaged checkpoint")] {
        for cmd in ["eval", "export"] {
            let mut c = Command::new(attnas_bin());
            c.args([cmd, "--ckpt"]).arg(w).args(["--arch", "min", "--device", "cpu", "--data"]).arg(&data);
            if cmd == "export" {
                c.arg("--out").arg(out.join("export"));
            }
            let o = c.output().unwrap();
            let err = stderr_of(&o);
            assert_eq!(o.status.code(), Some(2), "{cmd} {}: {err}", w.display());
            assert!(err.contains(why) && err.contains(w.file_name().unwrap().to_str().unwrap()), "{cmd}: {err}");
        }
    }

    let o = train(&data, &out, &sets(&[&["max_steps=8"][..], &every2].concat()), &["--resume"]);
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("skipped checkpoint of step 6") && err.contains("truncated"), "{err}");
    assert!(err.contains("skipped checkpoint of step 4") && err.contains("damaged checkpoint"), "{err}");
    assert!(err.contains("continuing from step 2"), "{err}");
    assert_eq!(starts(&out).last().unwrap().step, 2, "resumed from the newest intact checkpoint");
    assert_eq!(steps(&out.join("metrics.jsonl")).last().unwrap().step, 8);
    let aside = out.join("checkpoints/ckpt-000000006.damaged.safetensors");
    assert!(aside.is_file(), "the damaged files are kept, aside");

    // A checkpoint from before digests: resumes, with a notice.
    let state = ckpt(&out, 8).with_extension("").with_extension("state.json");
    let mut raw: serde_json::Value = serde_json::from_slice(&fs::read(&state).unwrap()).unwrap();
    raw.as_object_mut().unwrap().remove(DIGEST_KEY);
    fs::write(&state, serde_json::to_vec_pretty(&raw).unwrap()).unwrap();
    let o = train(&data, &out, &sets(&[&["max_steps=9"][..], &every2].concat()), &["--resume"]);
    let err = stderr_of(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("no tensor digest"), "{err}");

    // Every checkpoint damaged: refused, listing each, nothing moved or restarted.
    let bare = fresh_dir("survive-all-damaged");
    let o = train(&data, &bare, &sets(&["max_steps=2", "checkpoint.every_steps=1", UNIFORM]), &[]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    flip_bit_near_end(&ckpt(&bare, 1), 2);
    flip_bit_near_end(&ckpt(&bare, 2), 2);
    let o = train(&data, &bare, &sets(&["max_steps=3", "checkpoint.every_steps=1", UNIFORM]), &["--resume", "auto"]);
    let err = stderr_of(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("no intact checkpoint") && err.matches("damaged checkpoint").count() == 2, "{err}");
    assert!(ckpt(&bare, 2).is_file() && ckpt(&bare, 1).is_file());
}

#[test]
fn resume_auto_starts_an_empty_folder_and_continues_a_run() {
    let Some(data) = fashion_mnist_packed("survive-auto") else { return };
    let out = fresh_dir("survive-auto");
    let s = |max: &'static str| sets(&[max, UNIFORM, "checkpoint.every_steps=2"]);
    let o = train(&data, &out, &s("max_steps=2"), &["--resume", "auto"]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    let o = train(&data, &out, &s("max_steps=4"), &["--resume", "auto"]);
    assert!(o.status.success(), "{}", stderr_of(&o));
    assert_eq!(starts(&out).iter().map(|r| r.step).collect::<Vec<_>>(), [0, 2]);
    assert_eq!(steps(&out.join("metrics.jsonl")).iter().map(|r| r.step).collect::<Vec<_>>(), [1, 2, 3, 4]);
    // Bare --resume still needs a checkpoint.
    let empty = fresh_dir("survive-auto-empty");
    let o = train(&data, &empty, &s("max_steps=1"), &["--resume"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr_of(&o).contains("no checkpoint"), "{}", stderr_of(&o));
}

/// What a failed checkpoint write must leave: exit 1, the file and the bytes named, the last good
/// checkpoint named and intact, a `stop` line, no half-written file.
fn assert_failed_save(out: &Path, o: &std::process::Output, failed_step: u64, good: &[u64]) {
    let err = stderr_of(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let name = format!("ckpt-{failed_step:09}.safetensors");
    assert!(err.contains(&name) && err.contains(" bytes needed"), "{err}");
    let last = ckpt(out, *good.last().unwrap());
    assert!(err.contains(&format!("Last good checkpoint: {}", last.display())), "{err}");
    let stop = stops(out);
    assert_eq!(stop.len(), 1, "a stop line says why: {err}");
    assert_eq!((stop[0].step, stop[0].reason.as_str()), (failed_step, "error"));
    for &s in good {
        let l = load_checked(&attnas::checkpoint::resolve_ckpt_arg(&ckpt(out, s)).unwrap()).unwrap();
        assert_eq!(l.digest, DigestCheck::Verified, "step {s}");
    }
    let names: Vec<String> =
        fs::read_dir(out.join("checkpoints")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
}

#[test]
fn a_full_disk_stops_the_run_naming_the_file_and_keeps_earlier_checkpoints() {
    let Some(data) = fashion_mnist_packed("survive-disk-full") else { return };
    let mount = Path::new(env!("CARGO_TARGET_TMPDIR")).join("survive-disk-full");
    // Two tiny-space checkpoints (1.04 MB each) and the log fit; the third does not.
    let Some(disk) = Tmpfs::mount(&mount, "2600k", "survive-disk-full") else { return };
    let out = disk.dir.join("run");
    let o =
        train(&data, &out, &sets(&["max_steps=20", UNIFORM, "checkpoint.every_steps=2", "checkpoint.keep=10"]), &[]);
    assert!(stderr_of(&o).contains("No space left on device"), "{}", stderr_of(&o));
    assert_failed_save(&out, &o, 6, &[2, 4]);
}

#[test]
fn an_unwritable_checkpoint_path_stops_the_run_the_same_way() {
    let Some(data) = fashion_mnist_packed("survive-unwritable") else { return };
    let out = fresh_dir("survive-unwritable");
    // A directory where step 4's weights must go: the rename onto it fails (even for root). The folder
    // holds no checkpoint, so --resume auto starts a new run in it.
    fs::create_dir_all(ckpt(&out, 4)).unwrap();
    let s = sets(&["max_steps=20", UNIFORM, "checkpoint.every_steps=2"]);
    let o = train(&data, &out, &s, &["--resume", "auto"]);
    assert_failed_save(&out, &o, 4, &[2]);
}

/// The processes whose parent is `pid` (from /proc), with their state letter.
fn children_of(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else { continue };
        // pid (comm) state ppid ...: comm may hold spaces, so split after its closing parenthesis
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push((child, f[0].chars().next().unwrap_or('?')));
        }
    }
    out
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn is_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rfind(')').and_then(|i| stat[i + 1..].split_whitespace().next()) == Some("Z"),
    }
}

/// A SIGTERM to the rank launcher alone (what Kubernetes or `kill PID` sends; SLURM and Ctrl+C reach every
/// process): the launcher forwards the request, every rank stops after the same step with one checkpoint,
/// and the launcher exits 0. A `kill -9` of the launcher takes its ranks with it (parent-death signal).
#[test]
fn a_sigterm_to_the_launcher_alone_stops_every_rank_and_a_killed_launcher_takes_its_ranks() {
    let Some(data) = fashion_mnist_packed("survive-launcher") else { return };
    let ranks = ["--ranks", "2", "--rank-processes"];
    let out = fresh_dir("survive-launcher");
    let mut run = Running::start(&data, &out, &sets(&["max_steps=1000", UNIFORM]), &ranks);
    run.wait_for_steps(2);
    let workers = children_of(run.pid());
    assert_eq!(workers.len(), 2, "two rank processes: {workers:?}");
    run.signal("TERM");
    let status = run.wait();
    let err = run.stderr_text();
    assert_eq!(status.code(), Some(0), "a clean stop exits 0: {err}");
    assert!(err.contains("launcher: SIGTERM received"), "the launcher says it forwards the stop: {err}");
    let stop = stops(&out);
    assert_eq!(stop.len(), 1, "one stop line: {err}");
    let s = stop[0].step;
    assert!(
        stop[0].reason == "SIGTERM" || stop[0].reason == "a stop signal on another rank",
        "reason {}",
        stop[0].reason
    );
    assert!(ckpt(&out, s).is_file(), "a checkpoint at the stop step {s}");
    assert_eq!(steps(&out.join("metrics.jsonl")).last().unwrap().step, s, "no step after the stop");
    assert!(workers.iter().all(|w| is_gone(w.0)), "every rank exited: {workers:?}");

    let out = fresh_dir("survive-launcher-kill");
    let mut run = Running::start(&data, &out, &sets(&["max_steps=1000", UNIFORM]), &ranks);
    run.wait_for_steps(1);
    let workers = children_of(run.pid());
    assert_eq!(workers.len(), 2, "two rank processes: {workers:?}");
    run.signal("KILL");
    run.wait();
    let t0 = Instant::now();
    while !workers.iter().all(|w| is_gone(w.0)) {
        assert!(t0.elapsed() < Duration::from_secs(10), "ranks outlived their killed launcher: {workers:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
