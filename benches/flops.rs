//! Analytic FLOPs throughput: MACs and params of 100k uniformly drawn AttentiveNAS archs, and the
//! attentive sampler's candidate draws (up to 101 FLOPs evaluations each). Prints archs/s; no timing
//! assertions (run with `cargo bench --bench flops`).

use std::time::Instant;

use attnas::space::attentive::{AttentiveSampler, Prior};
use attnas::space::table::{self, TableMethod};
use attnas::space::{flops, sampler, Space};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() {
    let space = match Space::builtin("attentivenas") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let mut rng = StdRng::seed_from_u64(0);
    let n = 100_000;
    let archs: Vec<_> = (0..n).map(|_| sampler::uniform(&space, &mut rng)).collect();

    let t = Instant::now();
    let mut total = 0u64;
    for a in &archs {
        total = total.wrapping_add(flops::cost(&space, a).macs);
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "analytic FLOPs+params: {n} archs in {:.3} s = {:.2e} archs/s (mean {:.1} MFLOPs)",
        dt,
        n as f64 / dt,
        total as f64 / n as f64 / 1e6
    );

    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(sampler::uniform(&space, &mut rng));
    }
    let dt = t.elapsed().as_secs_f64();
    println!("uniform sampling: {n} archs in {dt:.3} s = {:.2e} archs/s", n as f64 / dt);

    let entries = table::generate(&space, 20_000, TableMethod::Uniform, 25.0, &mut rng);
    let mut attentive = match AttentiveSampler::new(&space, &entries, 25.0, Prior::Empirical) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let steps = 2000;
    let t = Instant::now();
    for _ in 0..steps {
        std::hint::black_box(attentive.sample(3, &mut rng));
    }
    let dt = t.elapsed().as_secs_f64();
    let st = attentive.stats();
    println!(
        "attentive sampler: {steps} targets x 3 candidates in {dt:.3} s = {:.0} us per target; {} draws ({:.1} per candidate), {} fallbacks of {}",
        dt / steps as f64 * 1e6,
        st.draws,
        st.draws as f64 / st.candidates as f64,
        st.fallbacks,
        st.candidates
    );
}
