//! The independent host assembly of one subnet's forward, written from the spec (1.2-1.4, 3.4) and built
//! only from the single-op CPU references of `attnas::backend::cpu` plus naive 1x1-conv loops (f64 sums).
//! It reads the weights by their PyTorch names in PyTorch's layout and does the two layout permutations
//! (depthwise `[C,1,k,k]` into a centred 5 x 5, stem `[C,3,3,3]`) itself, so it shares no code with
//! `src/nn` except the per-layer mask seed (`nn::tape::layer_seed`, an implementation choice the spec
//! leaves open). The block walk (`ref_blocks`) is derived here from the spec too, not from `space::blocks`.

use std::collections::HashMap;

use attnas::backend::cpu::{activation, batchnorm, depthwise, linear, pool, regularize, resize, se, stem_conv};
use attnas::backend::ops::depthwise::DepthwiseShape;
use attnas::backend::ops::resize::ResizeShape;
use attnas::backend::ops::stem_conv::StemShape;
use attnas::nn::tape::layer_seed;
use attnas::nn::{BnMode, ForwardOptions, NamedTensor};
use attnas::space::{Arch, Space};

/// make_divisible from spec 1.2: round to the nearest multiple (ties up), never below the divisor, and
/// one step up if that lost more than 10 %.
pub fn make_divisible(v: usize, d: usize) -> usize {
    let r = ((v + d / 2) / d * d).max(d);
    if (r as f64) < 0.9 * v as f64 {
        r + d
    } else {
        r
    }
}

/// One active block, derived from the spec (not from `space::blocks`).
#[derive(Clone, Copy, Debug)]
pub struct RefBlock {
    pub stage: usize,
    pub global: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub stride: usize,
    pub kernel: usize,
    pub mid: usize,
    pub expand_conv: bool,
    /// SE bottleneck width, if the stage has SE.
    pub se_mid: Option<usize>,
    pub size_in: usize,
    pub size_out: usize,
}

impl RefBlock {
    pub fn identity(&self) -> bool {
        self.c_in == self.c_out && self.stride == 1
    }
}

pub fn ref_blocks(space: &Space, arch: &Arch) -> Vec<RefBlock> {
    let (mut c, mut size, mut start) = (arch.width[0], arch.resolution.div_ceil(2), 0);
    let mut out = Vec::new();
    for (si, st) in space.stages.iter().enumerate() {
        for b in 0..arch.depth[si] {
            let stride = if b == 0 { st.stride } else { 1 };
            let mid = make_divisible(c * arch.expand[si], space.channel_divisor);
            out.push(RefBlock {
                stage: si,
                global: start + b,
                c_in: c,
                c_out: arch.width[si + 1],
                stride,
                kernel: arch.kernel[si],
                mid,
                expand_conv: st.expand.iter().any(|&t| t > 1),
                se_mid: st.se.then(|| make_divisible(mid / space.se_reduction, space.channel_divisor)),
                size_in: size,
                size_out: size.div_ceil(stride),
            });
            c = arch.width[si + 1];
            size = size.div_ceil(stride);
        }
        start += st.depth.iter().max().unwrap();
    }
    out
}

/// Named tensors by name.
pub struct Weights<'a>(HashMap<&'a str, &'a NamedTensor>);

impl<'a> Weights<'a> {
    pub fn new(named: &'a [NamedTensor]) -> Self {
        Weights(named.iter().map(|t| (t.name.as_str(), t)).collect())
    }
    pub fn get(&self, name: &str) -> &'a NamedTensor {
        self.0.get(name).copied().unwrap_or_else(|| panic!("checkpoint has no tensor '{name}'"))
    }
}

/// y[p, o] = sum_i x[p, i] W[o, i] over the leading slice W[:c_out, :c_in] of a torch `[O, I, 1, 1]` weight.
pub fn conv1x1(x: &[f32], c_in: usize, w: &NamedTensor, c_out: usize) -> Vec<f32> {
    assert!(w.shape.len() == 4 && w.shape[2] == 1 && w.shape[3] == 1, "{} is not a 1x1 conv", w.name);
    let ci_stored = w.shape[1];
    let pixels = x.len() / c_in;
    let mut y = vec![0.0; pixels * c_out];
    for p in 0..pixels {
        for o in 0..c_out {
            let row = &w.data[o * ci_stored..][..c_in];
            y[p * c_out + o] = (0..c_in).map(|i| x[p * c_in + i] as f64 * row[i] as f64).sum::<f64>() as f32;
        }
    }
    y
}

/// BN (+ swish) of `{prefix}.bn.bn.*` on `x` with `c` channels, batch or running statistics.
fn bn(w: &Weights, prefix: &str, x: &[f32], c: usize, swish: bool, mode: BnMode) -> Vec<f32> {
    let t = |s: &str| &w.get(&format!("{prefix}.bn.bn.{s}")).data;
    let mut y = vec![0.0; x.len()];
    if mode == BnMode::Eval {
        batchnorm::eval_fwd(x, c, t("weight"), t("bias"), t("running_mean"), t("running_var"), swish, &mut y);
    } else {
        let mut saved = vec![0.0; 2 * c];
        batchnorm::train_fwd(x, c, t("weight"), t("bias"), swish, &mut y, &mut saved);
    }
    y
}

/// 1.3: the input resized bicubically to the resolution `r` when its side differs.
pub fn resized(input: &[f32], n: usize, side: usize, r: usize) -> Vec<f32> {
    if side == r {
        return input.to_vec();
    }
    let s = ResizeShape { n, c: 3, h_in: side, w_in: side, h_out: r, w_out: r };
    let mut y = vec![0.0; n * r * r * 3];
    resize::bicubic_resize_fwd(&s, input, &mut y);
    y
}

/// The stem conv (before its BN) on `[n, r, r, 3]`: the first `c0` output channels. The torch weight
/// `[C, 3, 3, 3]` is permuted here into the reference's `[3, 3, 3, C]`.
pub fn stem_conv(named: &[NamedTensor], x: &[f32], n: usize, r: usize, c0: usize) -> Vec<f32> {
    let ws = Weights::new(named).get("first_conv.conv.conv.weight");
    let cs = ws.shape[0];
    let mut stem_w = vec![0.0; 27 * cs];
    for co in 0..cs {
        for ci in 0..3 {
            for ky in 0..3 {
                for kx in 0..3 {
                    stem_w[((ky * 3 + kx) * 3 + ci) * cs + co] = ws.data[((co * 3 + ci) * 3 + ky) * 3 + kx];
                }
            }
        }
    }
    let shape = StemShape { n, h: r, w: r, c_out_active: c0, c_out_stored: cs };
    let mut y = vec![0.0; n * (r / 2) * (r / 2) * c0];
    stem_conv::stem_conv_fwd(&shape, x, &stem_w, &mut y);
    y
}

/// What the reference forward produced, and which regularisation it applied.
pub struct RefOut {
    pub logits: Vec<f32>,
    /// (global block index, drop-connect rate, samples dropped) per block that got drop-connect.
    pub drop_connect: Vec<(usize, f32, usize)>,
    /// Elements zeroed by dropout.
    pub dropout_zeros: usize,
}

/// The subnet forward from the spec. `input` is `[n, side, side, 3]`; weights in PyTorch layout.
pub fn reference_forward(
    space: &Space,
    arch: &Arch,
    named: &[NamedTensor],
    input: &[f32],
    n: usize,
    side: usize,
    opt: &ForwardOptions,
) -> RefOut {
    let w = Weights::new(named);
    let r = arch.resolution;
    let c0 = arch.width[0];
    let y = stem_conv(named, &resized(input, n, side, r), n, r, c0);
    let mut x = bn(&w, "first_conv", &y, c0, true, opt.bn);

    let total_blocks: usize = space.stages.iter().map(|s| s.depth.iter().max().unwrap()).sum();
    let last_two = space.stages.len().saturating_sub(2);
    let mut out = RefOut { logits: Vec::new(), drop_connect: Vec::new(), dropout_zeros: 0 };
    for b in ref_blocks(space, arch) {
        let p = format!("blocks.{}.mobile_inverted_conv", b.global);
        let (pin, pout) = (n * b.size_in * b.size_in, n * b.size_out * b.size_out);
        let h = if b.expand_conv {
            let e = conv1x1(&x, b.c_in, w.get(&format!("{p}.inverted_bottleneck.conv.conv.weight")), b.mid);
            bn(&w, &format!("{p}.inverted_bottleneck"), &e, b.mid, true, opt.bn)
        } else {
            assert_eq!(b.mid, b.c_in);
            x.clone()
        };
        assert_eq!(h.len(), pin * b.mid);
        // depthwise: torch [C, 1, K, K] -> [5, 5, C], a K < 5 kernel centred
        let wd = w.get(&format!("{p}.depth_conv.conv.conv.weight"));
        let (cd, kt) = (wd.shape[0], wd.shape[2]);
        let off = (5 - kt) / 2;
        let mut dw = vec![0.0; 25 * cd];
        for c in 0..cd {
            for ky in 0..kt {
                for kx in 0..kt {
                    dw[((ky + off) * 5 + kx + off) * cd + c] = wd.data[(c * kt + ky) * kt + kx];
                }
            }
        }
        let s = DepthwiseShape {
            n,
            h: b.size_in,
            w: b.size_in,
            c_active: b.mid,
            c_stored: cd,
            kernel: b.kernel,
            stride: b.stride,
        };
        let mut d = vec![0.0; pout * b.mid];
        depthwise::depthwise_fwd(&s, &h, &dw, &mut d);
        let mut h = bn(&w, &format!("{p}.depth_conv"), &d, b.mid, true, opt.bn);
        if let Some(se_mid) = b.se_mid {
            let t = |s: &str| w.get(&format!("{p}.depth_conv.se.fc.{s}"));
            let wr = t("reduce.weight");
            let dims = se::SeDims {
                n,
                hw: b.size_out * b.size_out,
                c: b.mid,
                c_stored: wr.shape[1],
                se: se_mid,
                se_stored: wr.shape[0],
            };
            let prm = se::SeParams {
                w_reduce: &wr.data,
                b_reduce: &t("reduce.bias").data,
                w_expand: &t("expand.weight").data,
                b_expand: &t("expand.bias").data,
            };
            let mut y = vec![0.0; h.len()];
            se::se_block_fwd(&dims, &h, &prm, &mut y);
            h = y;
        }
        let pl = conv1x1(&h, b.mid, w.get(&format!("{p}.point_linear.conv.conv.weight")), b.c_out);
        let mut main = bn(&w, &format!("{p}.point_linear"), &pl, b.c_out, false, opt.bn);
        // 3.4: rate * idx / total on identity-shortcut blocks (of the last two stages by default)
        let rate = opt.drop_connect * b.global as f32 / total_blocks as f32;
        let in_scope = !opt.drop_connect_only_last_two_stages || b.stage >= last_two;
        if b.identity() && in_scope && rate > 0.0 {
            let keep = 1.0 - rate;
            let seed = layer_seed(opt.seed, b.global as u64);
            let per = pout / n * b.c_out;
            let mut y = vec![0.0; main.len()];
            regularize::drop_connect(seed, keep, 1.0 / keep, per, &main, &mut y);
            let dropped = (0..n).filter(|&i| regularize::mask_factor(seed, i as u64, keep, 1.0 / keep) == 0.0).count();
            out.drop_connect.push((b.global, rate, dropped));
            main = y;
        }
        let mut sc = x;
        if !b.identity() && b.stride == 2 {
            let mut y = vec![0.0; pout * b.c_in];
            pool::avg_pool2_fwd(&sc, n, b.size_in, b.size_in, b.c_in, &mut y);
            sc = y;
        }
        if b.c_in != b.c_out {
            sc = conv1x1(&sc, b.c_in, w.get(&format!("blocks.{}.shortcut.conv.conv.weight", b.global)), b.c_out);
        }
        let mut y = vec![0.0; main.len()];
        pool::add(&main, &sc, &mut y);
        x = y;
    }

    // head (1.3): final expand + BN + swish, pool, feature mix + swish, dropout, classifier
    let s = space.stages.len();
    let (c, wh) = (arch.width[s], arch.width[s + 1]);
    let fe = c * space.head.expand_ratio;
    let y = conv1x1(&x, c, w.get("last_conv.final_expand_layer.conv.conv.weight"), fe);
    let y = bn(&w, "last_conv.final_expand_layer", &y, fe, true, opt.bn);
    let mut pooled = vec![0.0; n * fe];
    pool::global_avg_pool_fwd(&y, n, y.len() / (n * fe), fe, &mut pooled);
    let fm = conv1x1(&pooled, fe, w.get("last_conv.feature_mix_layer.conv.conv.weight"), wh);
    let mut feat = vec![0.0; fm.len()];
    activation::swish_fwd(&fm, &mut feat);
    if opt.dropout > 0.0 {
        let keep = 1.0 - opt.dropout;
        let mut y = vec![0.0; feat.len()];
        regularize::dropout(layer_seed(opt.seed, total_blocks as u64 + 1), keep, 1.0 / keep, &feat, &mut y);
        out.dropout_zeros = y.iter().filter(|&&v| v == 0.0).count();
        feat = y;
    }
    let wc = w.get("classifier.linear.linear.weight");
    let dims = linear::LinearDims { rows: n, in_active: wh, in_stored: wc.shape[1], out: wc.shape[0] };
    out.logits = vec![0.0; n * wc.shape[0]];
    linear::linear_fwd(&dims, &feat, &wc.data, &w.get("classifier.linear.linear.bias").data, &mut out.logits);
    out
}
