//! The attnas command line. Errors print one message; usage and input errors exit with code 2.

use attnas::cli;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "attnas", version, about = "AttentiveNAS supernet training and search on hand-written CUDA kernels")]
struct Cli {
    /// One NVTX range per kernel launch and GEMM, named by the kernel, for nsys / ncu (the step, subnet,
    /// scoring, optimizer and data-wait ranges are always on; also ATTNAS_NVTX_OPS=1). docs/profiling.md.
    #[arg(long, global = true)]
    nvtx_ops: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Version, how kernels were built, CUDA libraries and GPUs found, CPU threads.
    Info(cli::info::InfoArgs),
    /// MFLOPs (multiply-accumulates / 1e6) and params of subnets, optionally per layer.
    Flops(cli::space_cmds::FlopsArgs),
    /// Summary of a search space: subnets, FLOPs range, depth range, choices.
    Space(cli::space_cmds::SpaceArgs),
    /// Write a FLOPs lookup table (.map) for the attentive sampler.
    FlopsTable(cli::space_cmds::FlopsTableArgs),
    /// ImageNet-style folder or IDX files -> packed, memory-mappable dataset.
    Prepare(cli::data_cmds::PrepareArgs),
    /// Packed dataset tools (inspect).
    Data(cli::data_cmds::DataArgs),
    /// Train a supernet: sandwich rule, in-place distillation, attentive sampling, checkpoints.
    Train(cli::train_cmd::TrainArgs),
    /// Throughput benchmarks (train: images/s of the full sandwich step).
    Bench(cli::bench_cmd::BenchArgs),
    /// BN recalibration and top-1/top-5 of subnets of a trained supernet.
    Eval(cli::eval_cmd::EvalArgs),
    /// A subnet as a standalone model: safetensors (recalibrated BN), arch.json, ONNX.
    Export(cli::export_cmd::ExportArgs),
    /// Loss and every parameter's gradient of one train-mode forward of a subnet on a given batch
    /// (safetensors, PyTorch names and shapes): for checking attnas against another framework.
    Grad(cli::grad_cmd::GradArgs),
    /// The supernet's tensors: state-dict names, PyTorch shapes, parameter or buffer (`--json` for tools).
    Params(cli::params_cmd::ParamsArgs),
    /// Evolutionary accuracy-vs-FLOPs search over a trained supernet -> Pareto front (CSV, JSON, SVG).
    Search(cli::search_cmd::SearchArgs),
    /// Accuracy predictor on a search's (arch, top-1) pairs (fit; Kendall's tau on held-out pairs).
    Predictor(cli::predictor_cmd::PredictorArgs),
    /// One self-contained HTML report of a training run (and its search): curves, sampling, front, config.
    Report(cli::report_cmd::ReportArgs),
    /// Latency of subnets' BN-folded inference forwards on this device (median, p10, p90), or predicted
    /// from a latency table (--predict), or a table checked against measurements (--check N).
    Latency(cli::latency_cmd::LatencyArgs),
    /// Measure every layer configuration of a space on this device into a latency table (JSON).
    LatencyTable(cli::latency_cmd::LatencyTableArgs),
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap: --help/--version print and exit 0; real usage errors exit 2.
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 2 } else { 0 });
        }
    };
    // A closed pipe (`attnas space | head`) ends a reporting command quietly, as it does any Unix filter,
    // instead of a panic in println!: restore SIGPIPE's default action (Rust's runtime ignores it). The
    // commands that can run as ranks keep it ignored: a rank whose peer died must get EPIPE from its
    // socket (and report the lost rank), not die of the signal.
    let may_run_ranks =
        matches!(cli.command, Command::Train(_) | Command::Bench(_) | Command::Eval(_) | Command::Search(_));
    if !may_run_ranks {
        // SAFETY: signal(2) with SIG_DFL on the main thread before any other thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    attnas::timeline::op_ranges_from_env();
    if cli.nvtx_ops {
        attnas::timeline::set_op_ranges(true);
    }
    let result = match &cli.command {
        Command::Info(a) => cli::info::run(a),
        Command::Flops(a) => cli::space_cmds::run_flops(a),
        Command::Space(a) => cli::space_cmds::run_space(a),
        Command::FlopsTable(a) => cli::space_cmds::run_flops_table(a),
        Command::Prepare(a) => cli::data_cmds::run_prepare(a),
        Command::Data(a) => cli::data_cmds::run_data(a),
        Command::Train(a) => cli::train_cmd::run_train(a),
        Command::Bench(a) => cli::bench_cmd::run_bench(a),
        Command::Eval(a) => cli::eval_cmd::run(a),
        Command::Export(a) => cli::export_cmd::run(a),
        Command::Grad(a) => cli::grad_cmd::run(a),
        Command::Params(a) => cli::params_cmd::run_params(a),
        Command::Search(a) => cli::search_cmd::run_search(a),
        Command::Predictor(a) => cli::predictor_cmd::run_predictor(a),
        Command::Report(a) => cli::report_cmd::run_report(a),
        Command::Latency(a) => cli::latency_cmd::run_latency(a),
        Command::LatencyTable(a) => cli::latency_cmd::run_latency_table(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(e.exit_code());
    }
}
