//! MACs ("MFLOPs" in AttentiveNAS's convention: multiply-accumulates / 1e6) and learnable params of
//! a subnet, computed analytically from [`Space::active_blocks`], with a per-layer breakdown.
//!
//! Counted (spec 5.3): conv C_in * C_out * k^2 * H_out * W_out / groups; linear in * out; SE as two
//! 1x1 convs at 1x1 (2 * mid * se_mid); the shortcut 1x1 conv when channels change, at the output
//! size; head expand at the final feature size, feature-mix at 1x1, classifier. Not counted: BN,
//! activations, pooling, the SE multiply, residual adds, biases, the input resize.
//! Params are those of the extracted static subnet: conv/linear weights, BN gamma and beta (2 per
//! channel; the feature-mix conv has no BN), SE and classifier biases, and shortcut convs only where
//! they are used (AttentiveNAS's profiler also counts the unused identity-shortcut convs, which its
//! static model allocates; spec section 2 excludes them and so do we). [`supernet_params`] counts the
//! stored supernet instead, every shortcut conv included.

use crate::space::arch::Arch;
use crate::space::config::Space;

/// Which layer of the network a cost belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Stem,
    Expand,
    Depthwise,
    Se,
    Project,
    Shortcut,
    HeadExpand,
    FeatureMix,
    Classifier,
}

impl Part {
    pub fn name(self) -> &'static str {
        match self {
            Part::Stem => "stem",
            Part::Expand => "expand",
            Part::Depthwise => "depthwise",
            Part::Se => "se",
            Part::Project => "project",
            Part::Shortcut => "shortcut",
            Part::HeadExpand => "head.expand",
            Part::FeatureMix => "head.feature_mix",
            Part::Classifier => "classifier",
        }
    }
}

/// The cost of one layer. `block` is (stage, index within stage) for MBConv layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layer {
    pub part: Part,
    pub block: Option<(usize, usize)>,
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    /// Output spatial size (1 for SE, feature-mix and classifier).
    pub size_out: usize,
    pub macs: u64,
    pub params: u64,
}

/// Totals of a subnet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    pub macs: u64,
    pub params: u64,
}

impl Cost {
    /// MACs / 1e6: the number AttentiveNAS calls MFLOPs.
    pub fn mflops(&self) -> f64 {
        self.macs as f64 / 1e6
    }
    /// Params / 1e6.
    pub fn mparams(&self) -> f64 {
        self.params as f64 / 1e6
    }
}

fn conv(c_in: usize, c_out: usize, k: usize, size_out: usize, groups: usize) -> u64 {
    (c_in * c_out * k * k * size_out * size_out / groups) as u64
}

/// Visit every counted layer of `arch` in network order. The arch must be valid for the space.
pub fn visit_layers(space: &Space, arch: &Arch, mut f: impl FnMut(Layer)) {
    let bn = |c: usize| 2 * c as u64;
    let c0 = arch.width[0];
    let (k0, cin0) = (space.stem.kernel, space.in_channels);
    let s0 = space.stem_size(arch.resolution);
    let w = (cin0 * c0 * k0 * k0) as u64;
    f(Layer {
        part: Part::Stem,
        block: None,
        c_in: cin0,
        c_out: c0,
        kernel: k0,
        size_out: s0,
        macs: conv(cin0, c0, k0, s0, 1),
        params: w + bn(c0),
    });
    let mut size = s0;
    for b in space.active_blocks(arch) {
        size = b.size_out;
        let block = Some((b.stage, b.index));
        let layer = |part, c_in, c_out, kernel, size_out, macs, params| Layer {
            part,
            block,
            c_in,
            c_out,
            kernel,
            size_out,
            macs,
            params,
        };
        if b.has_expand_conv {
            let p = (b.c_in * b.mid) as u64 + bn(b.mid);
            f(layer(Part::Expand, b.c_in, b.mid, 1, b.size_in, conv(b.c_in, b.mid, 1, b.size_in, 1), p));
        }
        let p = (b.mid * b.kernel * b.kernel) as u64 + bn(b.mid);
        let m = conv(b.mid, b.mid, b.kernel, b.size_out, b.mid);
        f(layer(Part::Depthwise, b.mid, b.mid, b.kernel, b.size_out, m, p));
        if b.se {
            // reduce (mid -> se_mid, bias) and expand (se_mid -> mid, bias), both at 1x1.
            let p = (2 * b.mid * b.se_mid + b.se_mid + b.mid) as u64;
            f(layer(Part::Se, b.mid, b.se_mid, 1, 1, 2 * (b.mid * b.se_mid) as u64, p));
        }
        let p = (b.mid * b.c_out) as u64 + bn(b.c_out);
        f(layer(Part::Project, b.mid, b.c_out, 1, b.size_out, conv(b.mid, b.c_out, 1, b.size_out, 1), p));
        if b.shortcut_conv {
            let m = conv(b.c_in, b.c_out, 1, b.size_out, 1);
            f(layer(Part::Shortcut, b.c_in, b.c_out, 1, b.size_out, m, (b.c_in * b.c_out) as u64));
        }
    }
    // The head's input size is the last block's output (walking the blocks again would double the cost).
    let h = space.head_shape_at(arch, size);
    let head = |part, c_in, c_out, size_out, macs, params| Layer {
        part,
        block: None,
        c_in,
        c_out,
        kernel: 1,
        size_out,
        macs,
        params,
    };
    let p = (h.c_in * h.expand) as u64 + bn(h.expand);
    f(head(Part::HeadExpand, h.c_in, h.expand, h.size, conv(h.c_in, h.expand, 1, h.size, 1), p));
    let m = (h.expand * h.width) as u64;
    f(head(Part::FeatureMix, h.expand, h.width, 1, m, m));
    let m = (h.width * h.num_classes) as u64;
    f(head(Part::Classifier, h.width, h.num_classes, 1, m, m + h.num_classes as u64));
}

/// MACs and params of `arch` (valid for the space).
pub fn cost(space: &Space, arch: &Arch) -> Cost {
    let mut total = Cost::default();
    visit_layers(space, arch, |l| {
        total.macs += l.macs;
        total.params += l.params;
    });
    total
}

/// MFLOPs (MACs / 1e6) of `arch`: what the samplers and the FLOPs bins use.
pub fn mflops(space: &Space, arch: &Arch) -> f64 {
    cost(space, arch).mflops()
}

/// Every counted layer of `arch`, in order.
pub fn per_layer(space: &Space, arch: &Arch) -> Vec<Layer> {
    let mut layers = Vec::new();
    visit_layers(space, arch, |l| layers.push(l));
    layers
}

/// A layer's display name: `stem`, `mb3.2.expand`, `head.feature_mix`, `classifier`.
pub fn layer_name(space: &Space, layer: &Layer) -> String {
    match layer.block {
        Some((stage, index)) => format!("{}.{index}.{}", space.stages[stage].name, layer.part.name()),
        None => layer.part.name().to_string(),
    }
}

/// Learnable params of the stored supernet at max shapes, counting every block's shortcut conv
/// (AttentiveNAS allocates one per block whether or not it is used): 23.93 M for AttentiveNAS.
pub fn supernet_params(space: &Space) -> u64 {
    let bn = |c: usize| 2 * c;
    let c0 = space.stem.width[space.stem.width.len() - 1];
    let mut p = space.in_channels * c0 * space.stem.kernel * space.stem.kernel + bn(c0);
    for b in space.stored_blocks() {
        if b.has_expand_conv {
            p += b.max_c_in * b.max_mid + bn(b.max_mid);
        }
        p += b.max_mid * b.max_kernel * b.max_kernel + bn(b.max_mid);
        if b.se {
            p += 2 * b.max_mid * b.max_se_mid + b.max_se_mid + b.max_mid;
        }
        p += b.max_mid * b.max_c_out + bn(b.max_c_out);
        p += b.max_c_in * b.max_c_out;
    }
    let last = space.stages[space.num_stages() - 1].max_width();
    let expand = last * space.head.expand_ratio;
    let width = space.head.width[space.head.width.len() - 1];
    p += last * expand + bn(expand) + expand * width + width * space.num_classes + space.num_classes;
    p as u64
}
