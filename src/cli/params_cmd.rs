//! `attnas params`: the supernet's tensor list for a space — every parameter and BN running statistic
//! by its AttentiveNAS state-dict name, with its PyTorch shape (what a checkpoint stores), our own
//! layout's shape, and whether it is a learnable parameter or a buffer. Tools that build or convert
//! checkpoints outside Rust (`scripts/convert_attentivenas_checkpoint.py`) read the `--json` form, so
//! the name list has one source: [`ParamTable::new`].

use serde_json::json;

use crate::error::{Error, Result};
use crate::nn::params::{Layout, ParamSpec};
use crate::nn::ParamTable;
use crate::space::config::{ATTENTIVENAS_YAML, TINY_YAML};
use crate::space::Space;

#[derive(clap::Args, Debug)]
pub struct ParamsArgs {
    /// Search space: `attentivenas`, `tiny`, or a YAML file.
    #[arg(long, default_value = "attentivenas")]
    pub config: String,
    /// Print JSON: {format, space, space_yaml, num_params, tensors: [{name, kind, shape, our_shape, layout}]}.
    #[arg(long)]
    pub json: bool,
}

/// The YAML text of a space argument (a built-in's embedded file, or the file named), so a converted
/// checkpoint can carry the exact space it was checked against.
fn space_yaml(config: &str) -> Result<String> {
    match config {
        "attentivenas" => Ok(ATTENTIVENAS_YAML.to_string()),
        "tiny" => Ok(TINY_YAML.to_string()),
        path => std::fs::read_to_string(path).map_err(|e| Error::io(path, e)),
    }
}

fn layout_name(l: Layout) -> &'static str {
    match l {
        Layout::Plain => "plain",
        Layout::Depthwise { .. } => "depthwise",
        Layout::Stem { .. } => "stem",
    }
}

/// Every tensor of the table, parameters first (arena order), then buffers, each with its kind.
fn entries(table: &ParamTable) -> impl Iterator<Item = (&ParamSpec, &'static str)> {
    table.params.iter().map(|p| (p, "param")).chain(table.buffers.iter().map(|p| (p, "buffer")))
}

fn dims(shape: &[usize]) -> String {
    format!("[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}

pub fn run_params(args: &ParamsArgs) -> Result<()> {
    let space = Space::resolve(&args.config)?;
    let table = ParamTable::new(&space)?;
    if args.json {
        let tensors: Vec<serde_json::Value> = entries(&table)
            .map(|(p, kind)| {
                json!({
                    "name": p.name,
                    "kind": kind,
                    "shape": p.torch_shape,
                    "our_shape": p.shape,
                    "layout": layout_name(p.layout),
                })
            })
            .collect();
        let doc = json!({
            "format": "attnas-params/1",
            "space": space.name,
            "space_yaml": space_yaml(&args.config)?,
            "num_params": table.num_params(),
            "tensors": tensors,
        });
        println!("{doc}");
        return Ok(());
    }
    let width = entries(&table).map(|(p, _)| p.name.len()).max().unwrap_or(4);
    println!("{:<width$}  {:<6}  {:<20}  layout", "name", "kind", "pytorch shape");
    for (p, kind) in entries(&table) {
        println!("{:<width$}  {:<6}  {:<20}  {}", p.name, kind, dims(&p.torch_shape), layout_name(p.layout));
    }
    println!(
        "space {}: {} parameters ({} values), {} buffers",
        space.name,
        table.params.len(),
        table.num_params(),
        table.buffers.len()
    );
    Ok(())
}
