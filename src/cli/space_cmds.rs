//! `attnas flops`, `attnas space` and `attnas flops-table`: the search-space commands. They print
//! MFLOPs (MACs / 1e6, AttentiveNAS's convention) and params of archs, summarize a space, and write a
//! FLOPs lookup table for the attentive sampler. Bad input is a one-line error with exit code 2.

use std::path::PathBuf;

use rand::SeedableRng;

use crate::error::{Error, Result};
use crate::space::arch::resolve_arch_list;
use crate::space::attentive::flops_bin;
use crate::space::flops::{self, layer_name};
use crate::space::table::{self, TableMethod};
use crate::space::Space;

#[derive(clap::Args, Debug)]
pub struct FlopsArgs {
    /// Archs, comma-separated and/or repeated: names (a0..a6, alphanet-a5, a5-1, min, max), YAML/JSON
    /// files, or inline archs {...}. A value naming a file is that one file.
    #[arg(long, required = true)]
    pub arch: Vec<String>,
    /// Search space: `attentivenas`, `tiny`, or a YAML file.
    #[arg(long, default_value = "attentivenas")]
    pub config: String,
    /// Print every layer's shape, MACs and params.
    #[arg(long)]
    pub per_layer: bool,
}

#[derive(clap::Args, Debug)]
pub struct SpaceArgs {
    /// Search space: `attentivenas`, `tiny`, or a YAML file.
    #[arg(long, default_value = "attentivenas")]
    pub config: String,
}

#[derive(clap::Args, Debug)]
pub struct FlopsTableArgs {
    /// Number of table entries (the min and max subnets are the first two).
    #[arg(long)]
    pub samples: usize,
    /// Output `.map` file (AttentiveNAS's line format).
    #[arg(long)]
    pub out: PathBuf,
    /// Search space: `attentivenas`, `tiny`, or a YAML file.
    #[arg(long, default_value = "attentivenas")]
    pub config: String,
    /// `uniform` (every gene uniform) or `balanced` (uniform draws, capped per FLOPs bin).
    #[arg(long, default_value = "uniform")]
    pub method: TableMethod,
    /// FLOPs bin width in MFLOPs (for `balanced` and the summary).
    #[arg(long, default_value_t = 25.0)]
    pub step: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run_flops(args: &FlopsArgs) -> Result<()> {
    let space = Space::resolve(&args.config)?;
    for (label, arch) in resolve_arch_list(&space, &args.arch)? {
        let cost = flops::cost(&space, &arch);
        let spec = if label.starts_with("inline") { arch.to_json() } else { label };
        println!(
            "{spec}: {:.1} MFLOPs ({} MACs), {:.2} M params ({}), resolution {}",
            cost.mflops(),
            cost.macs,
            cost.mparams(),
            cost.params,
            arch.resolution
        );
        if args.per_layer {
            println!(
                "  {:<22} {:>6} {:>6} {:>3} {:>5} {:>10} {:>10}",
                "layer", "c_in", "c_out", "k", "size", "MMACs", "params"
            );
            for l in flops::per_layer(&space, &arch) {
                println!(
                    "  {:<22} {:>6} {:>6} {:>3} {:>5} {:>10.3} {:>10}",
                    layer_name(&space, &l),
                    l.c_in,
                    l.c_out,
                    l.kernel,
                    l.size_out,
                    l.macs as f64 / 1e6,
                    l.params
                );
            }
        }
    }
    Ok(())
}

pub fn run_space(args: &SpaceArgs) -> Result<()> {
    let space = Space::resolve(&args.config)?;
    let (min, max) = (space.min_arch(), space.max_arch());
    let (cmin, cmax) = (flops::cost(&space, &min), flops::cost(&space, &max));
    let list = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    println!("space {}: {} classes, {} input channels", space.name, space.num_classes, space.in_channels);
    println!("subnets: {:.2e} ({} genes)", space.num_subnets(), space.genes().len());
    println!("FLOPs range: {:.1} - {:.1} MFLOPs (min and max subnet)", cmin.mflops(), cmax.mflops());
    println!("params range: {:.2} - {:.2} M (supernet stored: {:.2} M)", cmin.mparams(), cmax.mparams(), {
        flops::supernet_params(&space) as f64 / 1e6
    });
    let dmin: usize = min.depth.iter().sum();
    let dmax: usize = max.depth.iter().sum();
    println!("depth range: {dmin} - {dmax} blocks");
    println!("resolutions: {}", list(&space.resolutions));
    println!(
        "stem: width {{{}}}, {k}x{k} stride {}",
        list(&space.stem.width),
        space.stem.stride,
        k = space.stem.kernel
    );
    for st in &space.stages {
        println!(
            "{:<6} width {{{}}} depth {{{}}} kernel {{{}}} expand {{{}}} stride {} se {}",
            st.name,
            list(&st.width),
            list(&st.depth),
            list(&st.kernel),
            list(&st.expand),
            st.stride,
            if st.se { "yes" } else { "no" }
        );
    }
    println!("head: width {{{}}}, expand ratio {}", list(&space.head.width), space.head.expand_ratio);
    if !space.named_archs.is_empty() {
        let names: Vec<&str> = space.named_archs.keys().map(|s| s.as_str()).collect();
        println!("named archs: {}", names.join(", "));
    }
    Ok(())
}

pub fn run_flops_table(args: &FlopsTableArgs) -> Result<()> {
    if args.samples < 2 {
        return Err(Error::usage(format!("--samples {}: need at least 2 (the min and max subnets)", args.samples)));
    }
    if !(args.step.is_finite() && args.step > 0.0) {
        return Err(Error::usage(format!("--step {}: must be a positive number of MFLOPs", args.step)));
    }
    let space = Space::resolve(&args.config)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let entries = table::generate(&space, args.samples, args.method, args.step, &mut rng);
    table::write_table(&args.out, &entries)?;
    let mut bins: Vec<i64> = entries.iter().map(|e| flops_bin(e.mflops, args.step)).collect();
    bins.sort_unstable();
    let low = entries.iter().filter(|e| e.mflops < 300.0).count();
    bins.dedup();
    let mut f: Vec<f64> = entries.iter().map(|e| e.mflops).collect();
    f.sort_by(f64::total_cmp);
    println!(
        "wrote {} entries to {} ({:?}, seed {}): {} bins of {} MFLOPs, MFLOPs {:.1} - {:.1}, median {:.1}, {} below 300",
        entries.len(),
        args.out.display(),
        args.method,
        args.seed,
        bins.len(),
        args.step,
        f[0],
        f[f.len() - 1],
        f[f.len() / 2],
        low
    );
    Ok(())
}
