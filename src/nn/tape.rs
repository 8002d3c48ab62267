//! The activation plan of one subnet forward (llm.c style): every buffer the forward writes and the
//! backward reads, allocated from the activation arena before any op runs, plus the shared scratch the
//! layers take turns with. The same allocation run against [`Arena::measuring`] sizes the arena for the
//! largest subnet up front, so a training step never allocates.
//!
//! Shapes (NHWC, P = n * h * w of the layer, "mid" the active expanded width):
//! stem: input [n, r, r, 3], pre/out [n, r/2, r/2, c0];
//! block: expand pre/out [P_in, mid], depthwise pre/out [P_out, mid], SE out [P_out, mid],
//! project pre [P_out, c_out] (its BN output only where drop-connect follows: otherwise the BN adds the
//! shortcut and writes the block out), drop-connect out, shortcut pool [P_out, c_in] (2x2, padded by one
//! on an odd size_in: both branches give P_out = n * ceil(size_in / 2)^2), shortcut conv [P_out, c_out],
//! block out [P_out, c_out];
//! head: final-expand pre/out [P, 6 c], pooled [n, 6 c], feature-mix pre/out [n, w], dropout out, logits [n, classes].

use crate::backend::ops::batchnorm::{BatchNormSpec, BnActivation};
use crate::backend::ops::depthwise::DepthwiseShape;
use crate::backend::ops::regularize::DropMask;
use crate::backend::ops::se::SeShape;
use crate::backend::ops::stem_conv::StemShape;
use crate::backend::{Arena, DeviceMemory, Dtype, Tensor};
use crate::error::{Error, Result};
use crate::space::{ActiveBlock, Arch, HeadShape, Space, StoredBlock};

/// How the BN layers run in a forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BnMode {
    /// Batch statistics, running statistics untouched (supernet training, candidate scoring).
    Train,
    /// Running statistics (evaluation after calibration).
    Eval,
    /// Batch statistics, and fold this batch (1-based number) into the cumulative running statistics.
    Calibrate { batch: u32 },
}

/// What a forward does besides computing logits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForwardOptions {
    pub bn: BnMode,
    /// Dropout rate before the classifier (the max subnet trains with 0.2).
    pub dropout: f32,
    /// Base drop-connect rate; block i of B stored blocks uses rate * i / B (spec 3.4).
    pub drop_connect: f32,
    /// Only blocks of the last two stages get drop-connect (AttentiveNAS's default).
    pub drop_connect_only_last_two_stages: bool,
    /// Seed of the dropout and drop-connect masks (vary it per step and subnet).
    pub seed: u64,
}

impl ForwardOptions {
    /// Batch-statistics forward without regularisation: candidate scoring, sampled and min subnets.
    pub fn train() -> Self {
        ForwardOptions {
            bn: BnMode::Train,
            dropout: 0.0,
            drop_connect: 0.0,
            drop_connect_only_last_two_stages: true,
            seed: 0,
        }
    }

    /// Running-statistics forward for evaluation.
    pub fn eval() -> Self {
        ForwardOptions { bn: BnMode::Eval, ..Self::train() }
    }

    pub fn calibrate(batch: u32) -> Self {
        ForwardOptions { bn: BnMode::Calibrate { batch }, ..Self::train() }
    }
}

/// A mask seed per layer, derived from the forward's seed (splitmix64 finaliser).
pub fn layer_seed(seed: u64, layer: u64) -> u64 {
    let mut z = seed ^ (layer.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy, Debug)]
pub struct StemTape {
    pub shape: StemShape,
    /// [n, r, r, 3] at the subnet's resolution (the resized copy, or the caller's input).
    pub input: Tensor,
    /// Resize target when the input side differs from the resolution.
    pub resized: Option<Tensor>,
    pub pre: Tensor,
    pub out: Tensor,
    pub bn_saved: Tensor,
    pub bn: BatchNormSpec,
}

#[derive(Clone, Copy, Debug)]
pub struct ExpandTape {
    pub pre: Tensor,
    pub out: Tensor,
    pub bn_saved: Tensor,
    pub bn: BatchNormSpec,
}

#[derive(Clone, Copy, Debug)]
pub struct BlockTape {
    pub blk: ActiveBlock,
    pub stored: StoredBlock,
    /// Block input [P_in, c_in] (the previous layer's output).
    pub x: Tensor,
    pub expand: Option<ExpandTape>,
    pub dw: DepthwiseShape,
    pub dw_pre: Tensor,
    pub dw_out: Tensor,
    pub dw_saved: Tensor,
    pub dw_bn: BatchNormSpec,
    /// SE shape, output and saved intermediates.
    pub se: Option<(SeShape, Tensor, Tensor)>,
    /// The projection BN's input. Its output is never stored: the BN applies drop-connect (where the
    /// block has it) and adds the shortcut in its own pass, writing `out` directly.
    pub pl_pre: Tensor,
    pub pl_saved: Tensor,
    pub pl_bn: BatchNormSpec,
    /// Drop-connect mask (identity-shortcut blocks with a positive rate only).
    pub drop: Option<DropMask>,
    /// 2x2 average pool of the input (stride-2 blocks).
    pub sc_pool: Option<Tensor>,
    /// 1x1 shortcut conv output (channel-changing blocks).
    pub sc_conv: Option<Tensor>,
    pub out: Tensor,
}

impl BlockTape {
    /// Input of the depthwise conv: the expand output, or the block input when there is no expand conv.
    pub fn dw_in(&self) -> Tensor {
        self.expand.map_or(self.x, |e| e.out)
    }
    /// Input of the project conv.
    pub fn pl_in(&self) -> Tensor {
        self.se.map_or(self.dw_out, |(_, out, _)| out)
    }
    /// Input of the shortcut conv.
    pub fn sc_in(&self) -> Tensor {
        self.sc_pool.unwrap_or(self.x)
    }
    pub fn pixels_in(&self) -> usize {
        self.dw.n * self.blk.size_in * self.blk.size_in
    }
    pub fn pixels_out(&self) -> usize {
        self.dw.n * self.blk.size_out * self.blk.size_out
    }
}

#[derive(Clone, Copy, Debug)]
pub struct HeadTape {
    pub shape: HeadShape,
    pub c_in_stored: usize,
    pub expand_stored: usize,
    pub width_stored: usize,
    /// Last block output [P, c].
    pub x: Tensor,
    pub fe_pre: Tensor,
    pub fe_out: Tensor,
    pub fe_saved: Tensor,
    pub fe_bn: BatchNormSpec,
    pub pooled: Tensor,
    pub fm_pre: Tensor,
    pub fm_out: Tensor,
    pub dropout: Option<(Tensor, DropMask)>,
    pub logits: Tensor,
}

impl HeadTape {
    /// Input of the classifier.
    pub fn classifier_in(&self) -> Tensor {
        self.dropout.map_or(self.fm_out, |(t, _)| t)
    }
    pub fn pixels(&self) -> usize {
        self.logits.len() / self.shape.num_classes * self.shape.size * self.shape.size
    }
}

/// Scratch shared by the layers (used within one op call at a time).
#[derive(Clone, Copy, Debug)]
pub struct SharedScratch {
    pub bn: Tensor,
    pub dw_workspace: Tensor,
    pub stem_workspace: Tensor,
    pub se: Tensor,
}

/// Everything one forward wrote that its backward reads.
#[derive(Clone, Debug)]
pub struct Tape {
    pub arch: Arch,
    pub n: usize,
    pub options: ForwardOptions,
    pub stem: StemTape,
    pub blocks: Vec<BlockTape>,
    pub head: HeadTape,
    pub scratch: SharedScratch,
    /// Storage type of the activations from the stem conv's output to the final-expand BN's output
    /// (and of their gradients); the resized image, BN statistics, the pooled head, the logits and every
    /// scratch stay f32.
    pub dtype: Dtype,
    /// The largest `dtype` activation (elements) of any layer, and the largest f32 one of the head: the
    /// backward gradient buffers hold either.
    pub max_activation: usize,
    pub max_f32_activation: usize,
}

/// Running maxima of the shared scratch sizes while the layers are planned.
#[derive(Default)]
struct ScratchSizes {
    bn: usize,
    dw: usize,
    stem: usize,
    se: usize,
    act: usize,
    act_f32: usize,
}

impl ScratchSizes {
    fn bn(&mut self, spec: &BatchNormSpec) -> BatchNormSpec {
        self.bn = self.bn.max(spec.scratch_len());
        self.act = self.act.max(spec.pixels * spec.c_active);
        *spec
    }
}

fn bn_spec(pixels: usize, c_active: usize, c_stored: usize, activation: BnActivation) -> BatchNormSpec {
    BatchNormSpec { pixels, c_active, c_stored, activation }
}

impl Tape {
    /// Allocates every buffer of `arch`'s forward on a batch of `n` images of side `input_side` (the
    /// caller's input tensor `input`, `[n, side, side, 3]`, is referenced, not copied, when the side
    /// equals the resolution). Errors on a shape the ops cannot run. Odd sizes at stride-2 blocks are fine:
    /// the depthwise conv and the padded 2x2 shortcut pool both give ceil(size / 2). The trunk's
    /// activations are stored as `dtype` (see [`Tape::dtype`]).
    #[allow(clippy::too_many_arguments)]
    pub fn allocate<M: DeviceMemory>(
        space: &Space,
        arch: &Arch,
        n: usize,
        input: Tensor,
        input_side: usize,
        options: ForwardOptions,
        dtype: Dtype,
        arena: &mut Arena<M>,
    ) -> Result<Tape> {
        if n == 0 {
            return Err(Error::usage("a forward needs at least one image (batch size 0)"));
        }
        input.require("supernet input [n, side, side, 3]", n * input_side * input_side * 3)?;
        let mut sizes = ScratchSizes::default();
        // a trunk activation in the tape's storage type
        let act = |arena: &mut Arena<M>, len: usize| arena.alloc_typed(len, dtype);
        let stored = space.stored_blocks();
        let r = arch.resolution;
        let c0 = arch.width[0];
        let c0_stored = space.stem.width.iter().copied().max().unwrap_or(c0);
        let shape = StemShape { n, h: r, w: r, c_out_active: c0, c_out_stored: c0_stored };
        shape.validate()?;
        let resized = if input_side != r { Some(arena.alloc(n * r * r * 3)?) } else { None };
        let stem_pixels = n * shape.out_h() * shape.out_w();
        let stem = StemTape {
            shape,
            input: match resized {
                Some(t) => t,
                None => input.slice(0, n * r * r * 3)?,
            },
            resized,
            pre: act(arena, stem_pixels * c0)?,
            out: act(arena, stem_pixels * c0)?,
            bn_saved: arena.alloc(2 * c0)?,
            bn: sizes.bn(&bn_spec(stem_pixels, c0, c0_stored, BnActivation::Swish)),
        };
        sizes.stem = shape.wgrad_workspace_len();
        if space.stem_size(r) != shape.out_h() {
            return Err(Error::Other(format!(
                "stem output size {} disagrees with the space's {}",
                shape.out_h(),
                space.stem_size(r)
            )));
        }

        let total_blocks = space.max_blocks();
        let last_two_start = {
            let s = space.num_stages();
            stored.iter().position(|b| b.stage + 2 >= s).unwrap_or(0)
        };
        let mut x = stem.out;
        let mut blocks = Vec::new();
        for blk in space.active_blocks(arch) {
            let st = stored[blk.global];
            let (p_in, p_out) = (n * blk.size_in * blk.size_in, n * blk.size_out * blk.size_out);
            let expand = if blk.has_expand_conv {
                Some(ExpandTape {
                    pre: act(arena, p_in * blk.mid)?,
                    out: act(arena, p_in * blk.mid)?,
                    bn_saved: arena.alloc(2 * blk.mid)?,
                    bn: sizes.bn(&bn_spec(p_in, blk.mid, st.max_mid, BnActivation::Swish)),
                })
            } else {
                if blk.mid != blk.c_in {
                    return Err(Error::Other(format!(
                        "block {} has no expand conv but mid {} != c_in {}",
                        blk.global, blk.mid, blk.c_in
                    )));
                }
                None
            };
            let dw = DepthwiseShape {
                n,
                h: blk.size_in,
                w: blk.size_in,
                c_active: blk.mid,
                c_stored: st.max_mid,
                kernel: blk.kernel,
                stride: blk.stride,
            };
            dw.validate()?;
            sizes.dw = sizes.dw.max(dw.wgrad_workspace_len());
            let dw_pre = act(arena, p_out * blk.mid)?;
            let dw_out = act(arena, p_out * blk.mid)?;
            let dw_saved = arena.alloc(2 * blk.mid)?;
            let dw_bn = sizes.bn(&bn_spec(p_out, blk.mid, st.max_mid, BnActivation::Swish));
            let se = if blk.se {
                let s = SeShape {
                    n,
                    h: blk.size_out,
                    w: blk.size_out,
                    c: blk.mid,
                    c_stored: st.max_mid,
                    se: blk.se_mid,
                    se_stored: st.max_se_mid,
                };
                sizes.se = sizes.se.max(s.scratch_len());
                Some((s, act(arena, p_out * blk.mid)?, arena.alloc(s.saved_len())?))
            } else {
                None
            };
            let pl_pre = act(arena, p_out * blk.c_out)?;
            let pl_saved = arena.alloc(2 * blk.c_out)?;
            let pl_bn = sizes.bn(&bn_spec(p_out, blk.c_out, st.max_c_out, BnActivation::Identity));
            let in_scope = !options.drop_connect_only_last_two_stages || blk.global >= last_two_start;
            let rate = options.drop_connect * blk.global as f32 / total_blocks as f32;
            let drop = if blk.identity_shortcut && in_scope && rate > 0.0 {
                Some(DropMask { seed: layer_seed(options.seed, blk.global as u64), rate })
            } else {
                None
            };
            let sc_pool =
                if !blk.identity_shortcut && blk.stride == 2 { Some(act(arena, p_out * blk.c_in)?) } else { None };
            let sc_conv = if blk.shortcut_conv { Some(act(arena, p_out * blk.c_out)?) } else { None };
            let out = act(arena, p_out * blk.c_out)?;
            sizes.act = sizes.act.max(p_in * blk.c_in).max(p_out * blk.mid);
            let tape = BlockTape {
                blk,
                stored: st,
                x,
                expand,
                dw,
                dw_pre,
                dw_out,
                dw_saved,
                dw_bn,
                se,
                pl_pre,
                pl_saved,
                pl_bn,
                drop,
                sc_pool,
                sc_conv,
                out,
            };
            x = out;
            blocks.push(tape);
        }

        let shape = space.head_shape(arch);
        let last = space.stages.last().map_or(c0_stored, |s| s.max_width());
        let expand_stored = last * space.head.expand_ratio;
        let width_stored = space.head.width.iter().copied().max().unwrap_or(shape.width);
        let p = n * shape.size * shape.size;
        let fe_bn = sizes.bn(&bn_spec(p, shape.expand, expand_stored, BnActivation::Swish));
        let head = HeadTape {
            shape,
            c_in_stored: last,
            expand_stored,
            width_stored,
            x,
            fe_pre: act(arena, p * shape.expand)?,
            fe_out: act(arena, p * shape.expand)?,
            fe_saved: arena.alloc(2 * shape.expand)?,
            fe_bn,
            pooled: arena.alloc(n * shape.expand)?,
            fm_pre: arena.alloc(n * shape.width)?,
            fm_out: arena.alloc(n * shape.width)?,
            dropout: if options.dropout > 0.0 {
                let mask = DropMask { seed: layer_seed(options.seed, total_blocks as u64 + 1), rate: options.dropout };
                Some((arena.alloc(n * shape.width)?, mask))
            } else {
                None
            },
            logits: arena.alloc(n * shape.num_classes)?,
        };
        sizes.act = sizes.act.max(p * shape.c_in);
        sizes.act_f32 = n * shape.expand.max(shape.width).max(shape.num_classes);
        let scratch = SharedScratch {
            bn: arena.alloc(sizes.bn)?,
            dw_workspace: arena.alloc(sizes.dw)?,
            stem_workspace: arena.alloc(sizes.stem)?,
            se: arena.alloc(sizes.se)?,
        };
        Ok(Tape {
            arch: arch.clone(),
            n,
            options,
            stem,
            blocks,
            head,
            scratch,
            dtype,
            max_activation: sizes.act,
            max_f32_activation: sizes.act_f32,
        })
    }
}

/// The backward's gradient buffers: two ping-pong block gradients and three intermediates, each an f32
/// run that holds the largest trunk activation in the tape's storage type or the largest f32 one of the
/// head; the backward views them in the type of the gradient it writes.
#[derive(Clone, Copy, Debug)]
pub struct GradBuffers {
    pub g: [Tensor; 2],
    pub t: [Tensor; 3],
}

impl GradBuffers {
    pub fn allocate<M: DeviceMemory>(tape: &Tape, arena: &mut Arena<M>) -> Result<GradBuffers> {
        let len = (tape.max_activation * tape.dtype.size()).div_ceil(4).max(tape.max_f32_activation);
        Ok(GradBuffers {
            g: [arena.alloc(len)?, arena.alloc(len)?],
            t: [arena.alloc(len)?, arena.alloc(len)?, arena.alloc(len)?],
        })
    }
}
