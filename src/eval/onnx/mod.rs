//! ONNX export of a static subnet (opset 17, IR version 8): the graph AttentiveNAS's static model runs,
//! written node by node over the tensors of [`crate::eval::static_subnet`] (same names; they become the
//! graph's initializers).
//!
//! Input `images`: `[N, 3, r, r]` float32 NCHW at the subnet's resolution r, already resized (the model
//! resizes its loader crop bicubically to r, spec 1.3; that step is outside the graph) and normalised
//! (`(x / 255 - mean) / std` with the ImageNet mean and std per RGB channel; grey images replicated to
//! RGB). Output `logits`: `[N, classes]`. N is symbolic.
//!
//! Ops: stem Conv 3x3 s2 + BatchNormalization + swish; per block: [Conv 1x1 + BN + swish], depthwise
//! Conv (group = mid, pads k/2, stride s) + BN + swish, [SE: GlobalAveragePool, Conv + bias, Relu,
//! Conv + bias, HardSigmoid(alpha = 1/6, beta = 0.5), Mul], Conv 1x1 + BN, shortcut ([AveragePool 2x2
//! s2, with pads 1 and count_include_pad on an odd size] [Conv 1x1]) and Add; head Conv 1x1 + BN +
//! swish, GlobalAveragePool, Conv 1x1 + swish, Flatten, Gemm (transB). Swish is Sigmoid then Mul; BN runs in inference mode on the running statistics with
//! epsilon 1e-5 (the supernet's). A BN-folded subnet (`crate::deploy::fold`, the export default) has
//! each Conv + BatchNormalization pair as one Conv with a bias instead.

pub mod proto;

use std::collections::{HashMap, HashSet};

use proto::{
    attribute_type, dimension, AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, TypeProtoTensor, ValueInfoProto, DATA_TYPE_FLOAT,
};

use super::static_subnet::{block_prefix, bn_names, shortcut_weight, CLASSIFIER, FEATURE_MIX, HEAD_EXPAND, STEM};
use crate::backend::cpu::batchnorm::BN_EPS;
use crate::checkpoint::TensorRecord;
use crate::error::{Error, Result};
use crate::space::{ActiveBlock, Arch, HeadShape, Space};

/// The opset the graph is written against and the IR version that goes with it.
pub const OPSET: i64 = 17;
pub const IR_VERSION: i64 = 8;
pub const INPUT: &str = "images";
pub const OUTPUT: &str = "logits";

fn attr_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), i: Some(v), r#type: attribute_type::INT, ..Default::default() }
}
fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto { name: name.into(), ints: v.to_vec(), r#type: attribute_type::INTS, ..Default::default() }
}
fn attr_float(name: &str, v: f32) -> AttributeProto {
    AttributeProto { name: name.into(), f: Some(v), r#type: attribute_type::FLOAT, ..Default::default() }
}

fn value_info(name: &str, dims: &[Dimension]) -> ValueInfoProto {
    let shape = TensorShapeProto { dim: dims.to_vec() };
    let tensor = TypeProtoTensor { elem_type: DATA_TYPE_FLOAT, shape: Some(shape) };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto { tensor_type: Some(tensor), ..Default::default() }),
        ..Default::default()
    }
}
fn dim(v: usize) -> Dimension {
    Dimension { value: Some(dimension::Value::DimValue(v as i64)), ..Default::default() }
}
fn dim_param(p: &str) -> Dimension {
    Dimension { value: Some(dimension::Value::DimParam(p.into())), ..Default::default() }
}

/// A conv's square kernel side, stride and group count.
#[derive(Clone, Copy)]
struct Geometry {
    k: usize,
    stride: usize,
    group: usize,
}

/// A 1x1 conv, stride 1, dense.
const POINTWISE: Geometry = Geometry { k: 1, stride: 1, group: 1 };

/// Builds the node list; initializers are added the first time a node reads them.
struct Builder<'a> {
    tensors: HashMap<&'a str, &'a TensorRecord>,
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    added: HashSet<String>,
}

impl Builder<'_> {
    fn weight(&mut self, name: &str) -> Result<String> {
        let t = self.tensors.get(name).ok_or_else(|| Error::Other(format!("onnx export: no tensor '{name}'")))?;
        if self.added.insert(name.to_string()) {
            self.initializers.push(TensorProto {
                dims: t.shape.iter().map(|&d| d as i64).collect(),
                data_type: DATA_TYPE_FLOAT,
                name: name.to_string(),
                raw_data: t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                ..Default::default()
            });
        }
        Ok(name.to_string())
    }

    /// Appends a node named `name` with one output `name.out`, returning the output's name.
    fn node(&mut self, name: &str, op: &str, inputs: Vec<String>, attribute: Vec<AttributeProto>) -> String {
        let out = format!("{name}.out");
        self.nodes.push(NodeProto {
            input: inputs,
            output: vec![out.clone()],
            name: name.into(),
            op_type: op.into(),
            attribute,
            ..Default::default()
        });
        out
    }

    /// Conv with `weight` (and `bias`), padding k/2.
    fn conv(&mut self, name: &str, x: String, weight: &str, bias: Option<&str>, geo: Geometry) -> Result<String> {
        let Geometry { k, stride: s, group } = geo;
        let mut inputs = vec![x, self.weight(weight)?];
        if let Some(b) = bias {
            inputs.push(self.weight(b)?);
        }
        let p = (k / 2) as i64;
        let mut attrs = vec![
            attr_ints("kernel_shape", &[k as i64, k as i64]),
            attr_ints("strides", &[s as i64, s as i64]),
            attr_ints("pads", &[p, p, p, p]),
        ];
        if group > 1 {
            attrs.push(attr_int("group", group as i64));
        }
        Ok(self.node(name, "Conv", inputs, attrs))
    }

    /// Inference BatchNormalization over the static BN tensors under `prefix`.
    fn bn(&mut self, prefix: &str, x: String) -> Result<String> {
        let mut inputs = vec![x];
        for n in bn_names(prefix) {
            inputs.push(self.weight(&n)?);
        }
        Ok(self.node(&format!("{prefix}.bn"), "BatchNormalization", inputs, vec![attr_float("epsilon", BN_EPS)]))
    }

    /// x * sigmoid(x).
    fn swish(&mut self, name: &str, x: String) -> String {
        let s = self.node(&format!("{name}.sigmoid"), "Sigmoid", vec![x.clone()], vec![]);
        self.node(&format!("{name}.swish"), "Mul", vec![x, s], vec![])
    }

    /// Conv (no bias) + BN, then swish when `act`; a BN-folded subnet (`{prefix}.conv.bias` present,
    /// see `crate::deploy::fold`) gives a Conv with bias and no BatchNormalization node.
    fn conv_bn(&mut self, prefix: &str, x: String, geo: Geometry, act: bool) -> Result<String> {
        let bias = format!("{prefix}.conv.bias");
        let folded = self.tensors.contains_key(bias.as_str());
        let weight = format!("{prefix}.conv.weight");
        let y = self.conv(&format!("{prefix}.conv"), x, &weight, folded.then_some(bias.as_str()), geo)?;
        let y = if folded { y } else { self.bn(prefix, y)? };
        Ok(if act { self.swish(prefix, y) } else { y })
    }
}

/// What a graph covers: a whole subnet, or one of its layers alone (latency tables time layers in
/// onnxruntime). A layer's graph takes and returns NCHW activations; block `j` of the static tensors'
/// numbering is block 0 of a one-block subnet.
#[derive(Clone, Copy, Debug)]
pub enum GraphPart<'a> {
    Whole(&'a Arch),
    /// The stem at resolution `r` with `c0` channels: `[N, 3, r, r]` -> `[N, c0, r/2, r/2]`.
    Stem {
        r: usize,
        c0: usize,
    },
    /// One block (static block 0): `[N, c_in, size_in, size_in]` -> `[N, c_out, size_out, size_out]`.
    Block(&'a ActiveBlock),
    /// The head: `[N, c, size, size]` -> `[N, classes]`.
    Head(&'a HeadShape),
}

fn emit_stem(g: &mut Builder<'_>, space: &Space, x: String) -> Result<String> {
    g.conv_bn(STEM, x, Geometry { k: space.stem.kernel, stride: space.stem.stride, group: 1 }, true)
}

fn emit_block(g: &mut Builder<'_>, j: usize, blk: &ActiveBlock, x: String) -> Result<String> {
    let p = block_prefix(j);
    let input = x;
    let mut y = input.clone();
    if blk.has_expand_conv {
        y = g.conv_bn(&format!("{p}.inverted_bottleneck"), y, POINTWISE, true)?;
    }
    y =
        g.conv_bn(&format!("{p}.depth_conv"), y, Geometry { k: blk.kernel, stride: blk.stride, group: blk.mid }, true)?;
    if blk.se {
        let se = format!("{p}.depth_conv.se");
        let v = g.node(&format!("{se}.pool"), "GlobalAveragePool", vec![y.clone()], vec![]);
        let (rw, rb) = (format!("{se}.fc.reduce.weight"), format!("{se}.fc.reduce.bias"));
        let v = g.conv(&format!("{se}.fc.reduce"), v, &rw, Some(&rb), POINTWISE)?;
        let v = g.node(&format!("{se}.fc.relu"), "Relu", vec![v], vec![]);
        let (ew, eb) = (format!("{se}.fc.expand.weight"), format!("{se}.fc.expand.bias"));
        let v = g.conv(&format!("{se}.fc.expand"), v, &ew, Some(&eb), POINTWISE)?;
        let hs = vec![attr_float("alpha", 1.0 / 6.0), attr_float("beta", 0.5)];
        let v = g.node(&format!("{se}.fc.h_sigmoid"), "HardSigmoid", vec![v], hs);
        y = g.node(&format!("{se}.scale"), "Mul", vec![y, v], vec![]);
    }
    y = g.conv_bn(&format!("{p}.point_linear"), y, POINTWISE, false)?;
    let mut sc = input;
    if blk.stride > 1 {
        // the original pads an odd side by one and counts the zeros (F.avg_pool2d's defaults)
        let p = (blk.size_in % 2) as i64;
        let attrs = vec![
            attr_ints("kernel_shape", &[2, 2]),
            attr_ints("strides", &[2, 2]),
            attr_ints("pads", &[p, p, p, p]),
            attr_int("count_include_pad", 1),
        ];
        sc = g.node(&format!("blocks.{j}.shortcut.pool"), "AveragePool", vec![sc], attrs);
    }
    if blk.shortcut_conv {
        sc = g.conv(&format!("blocks.{j}.shortcut.conv"), sc, &shortcut_weight(j), None, POINTWISE)?;
    }
    Ok(g.node(&format!("blocks.{j}.add"), "Add", vec![y, sc], vec![]))
}

fn emit_head(g: &mut Builder<'_>, x: String) -> Result<String> {
    let y = g.conv_bn(HEAD_EXPAND, x, POINTWISE, true)?;
    let y = g.node("last_conv.1.pool", "GlobalAveragePool", vec![y], vec![]);
    let y = g.conv(&format!("{FEATURE_MIX}.conv"), y, &format!("{FEATURE_MIX}.conv.weight"), None, POINTWISE)?;
    let y = g.swish(FEATURE_MIX, y);
    let y = g.node("flatten", "Flatten", vec![y], vec![attr_int("axis", 1)]);
    let (w, b) = (g.weight(&format!("{CLASSIFIER}.weight"))?, g.weight(&format!("{CLASSIFIER}.bias"))?);
    Ok(g.node(CLASSIFIER, "Gemm", vec![y, w, b], vec![attr_int("transB", 1)]))
}

/// The ONNX model of `arch` over its static tensors (`tensors`, from
/// [`crate::eval::static_subnet::extract`], BN-folded or not). `metadata` goes into the model's
/// `metadata_props`.
pub fn build_model(
    space: &Space,
    arch: &Arch,
    tensors: &[TensorRecord],
    metadata: &[(String, String)],
) -> Result<ModelProto> {
    build_part(space, GraphPart::Whole(arch), tensors, metadata)
}

/// The ONNX model of one [`GraphPart`] over its static tensors.
pub fn build_part(
    space: &Space,
    part: GraphPart<'_>,
    tensors: &[TensorRecord],
    metadata: &[(String, String)],
) -> Result<ModelProto> {
    let mut g = Builder {
        tensors: tensors.iter().map(|t| (t.name.as_str(), t)).collect(),
        nodes: Vec::new(),
        initializers: Vec::new(),
        added: HashSet::new(),
    };
    let x = INPUT.to_string();
    let (input_dims, output_dims, what) = match part {
        GraphPart::Whole(arch) => {
            space.validate(arch).map_err(Error::usage)?;
            let mut x = emit_stem(&mut g, space, x)?;
            for (j, blk) in space.active_blocks(arch).enumerate() {
                x = emit_block(&mut g, j, &blk, x)?;
            }
            emit_head(&mut g, x)?;
            let r = arch.resolution;
            ([3, r, r], vec![space.num_classes], format!("subnet {}", arch.to_json()))
        }
        GraphPart::Stem { r, c0 } => {
            emit_stem(&mut g, space, x)?;
            let s = space.stem_size(r);
            ([3, r, r], vec![c0, s, s], format!("stem r={r} c={c0}"))
        }
        GraphPart::Block(blk) => {
            emit_block(&mut g, 0, blk, x)?;
            let (i, o) = (blk.size_in, blk.size_out);
            ([blk.c_in, i, i], vec![blk.c_out, o, o], format!("block {blk:?}"))
        }
        GraphPart::Head(h) => {
            emit_head(&mut g, x)?;
            ([h.c_in, h.size, h.size], vec![h.num_classes], format!("head {h:?}"))
        }
    };
    // The last node's output is the graph's output.
    if let Some(last) = g.nodes.last_mut() {
        last.output = vec![OUTPUT.to_string()];
    }
    let [c, h, w] = input_dims;
    let mut out_dims = vec![dim_param("N")];
    out_dims.extend(output_dims.iter().map(|&d| dim(d)));
    let graph = GraphProto {
        node: g.nodes,
        name: format!("attnas_{}_subnet", space.name),
        initializer: g.initializers,
        doc_string: format!(
            "{INPUT}: [N, {c}, {h}, {w}] float32 NCHW (images: resized to the resolution and normalised with the \
             ImageNet mean/std outside the graph); {OUTPUT}: [N, {}]",
            output_dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        ),
        input: vec![value_info(INPUT, &[dim_param("N"), dim(c), dim(h), dim(w)])],
        output: vec![value_info(OUTPUT, &out_dims)],
        value_info: Vec::new(),
    };
    Ok(ModelProto {
        ir_version: IR_VERSION,
        producer_name: "attnas".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        domain: String::new(),
        model_version: 1,
        doc_string: format!("AttentiveNAS static {what} of space '{}'", space.name),
        graph: Some(graph),
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: OPSET }],
        metadata_props: metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto { key: k.clone(), value: v.clone() })
            .collect(),
    })
}
