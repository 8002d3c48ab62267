//! Layer shapes from an arch: the one place that says which MBConv blocks a subnet runs and at what
//! sizes, used by the FLOPs/params count and by the supernet, so the two cannot disagree.
//!
//! Per stage i, the first depth[i] stored blocks run; block 0 carries the stage stride. c_in is the
//! previous stage's width for block 0 and this stage's width after; mid = make_divisible(c_in * t, 8);
//! se_mid = make_divisible(mid / 4, 8). The shortcut is an identity iff c_in == c_out and stride 1,
//! otherwise avg-pool 2x2 (stride 2) then a 1x1 conv if channels change. Spatial sizes follow the conv
//! arithmetic with padding k/2: out = ceil(in / stride) (the stem of an even resolution r gives r/2).
//! At an odd size before a stride-2 block the original pads its shortcut pool by one (zeros counted), which
//! also gives ceil(in / 2), so both branches meet; its analytic FLOPs count (`compute_active_subnet_flops`)
//! uses the same (size + 1) // 2 there. It floors only the stem of an odd resolution (r // 2), where the
//! conv really outputs ceil(r / 2) as here and in its hook-based profiler; every published resolution is even.
//! [`StoredBlock`] gives the supernet's allocation: the max of every active size over the space.

use crate::space::arch::Arch;
use crate::space::config::Space;
use crate::space::make_divisible;

/// One active MBConv block of a subnet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ActiveBlock {
    /// Stage index (0 = the first MBConv stage, `mb1` in AttentiveNAS).
    pub stage: usize,
    /// Block index within the stage.
    pub index: usize,
    /// Index among all stored blocks of the supernet (sum of earlier stages' max depths + index).
    pub global: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub stride: usize,
    pub kernel: usize,
    pub expand: usize,
    /// Expanded channels, make_divisible(c_in * expand, divisor).
    pub mid: usize,
    /// Whether the block has the 1x1 expand conv (the stage's max expand ratio is above 1).
    pub has_expand_conv: bool,
    pub se: bool,
    /// SE bottleneck channels (0 when the stage has no SE).
    pub se_mid: usize,
    /// c_in == c_out and stride 1: the shortcut is the input itself (drop-connect applies here only).
    pub identity_shortcut: bool,
    /// The shortcut has a 1x1 conv (channels change).
    pub shortcut_conv: bool,
    /// Spatial size (square) entering and leaving the block.
    pub size_in: usize,
    pub size_out: usize,
}

/// The supernet's stored (maximum) sizes of one block: what the weights are allocated at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredBlock {
    pub stage: usize,
    pub index: usize,
    pub global: usize,
    pub stride: usize,
    pub se: bool,
    pub has_expand_conv: bool,
    pub max_c_in: usize,
    pub max_c_out: usize,
    pub max_mid: usize,
    pub max_kernel: usize,
    /// 0 when the stage has no SE.
    pub max_se_mid: usize,
}

/// The head of a subnet: expand 1x1 conv at the final feature size, pool, feature-mix, classifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadShape {
    pub c_in: usize,
    /// c_in * head.expand_ratio.
    pub expand: usize,
    /// Feature-mix output width (the last width gene).
    pub width: usize,
    pub size: usize,
    pub num_classes: usize,
}

/// Output size of a conv or pool with padding k/2: ceil(size / stride).
pub fn strided_size(size: usize, stride: usize) -> usize {
    size.div_ceil(stride)
}

impl Space {
    /// Expanded channels of a block with `c_in` inputs and ratio `expand`.
    pub fn mid_channels(&self, c_in: usize, expand: usize) -> usize {
        make_divisible(c_in * expand, self.channel_divisor)
    }

    /// SE bottleneck channels for `mid` expanded channels.
    pub fn se_mid_channels(&self, mid: usize) -> usize {
        make_divisible(mid / self.se_reduction, self.channel_divisor)
    }

    /// Spatial size after the stem for input resolution `r`.
    pub fn stem_size(&self, resolution: usize) -> usize {
        strided_size(resolution, self.stem.stride)
    }

    /// The active blocks of `arch`, in order. The arch must be valid for the space.
    pub fn active_blocks<'a>(&'a self, arch: &'a Arch) -> ActiveBlocks<'a> {
        ActiveBlocks {
            space: self,
            arch,
            stage: 0,
            index: 0,
            stage_start: 0,
            c_in: arch.width[0],
            size: self.stem_size(arch.resolution),
        }
    }

    /// The head shape of `arch` (needs the final feature size, so it walks the blocks).
    pub fn head_shape(&self, arch: &Arch) -> HeadShape {
        let size = self.active_blocks(arch).last().map_or(self.stem_size(arch.resolution), |b| b.size_out);
        self.head_shape_at(arch, size)
    }

    /// The head shape of `arch` given the final feature size `size`.
    pub fn head_shape_at(&self, arch: &Arch, size: usize) -> HeadShape {
        let c_in = arch.width[self.num_stages()];
        HeadShape {
            c_in,
            expand: c_in * self.head.expand_ratio,
            width: arch.width[self.num_stages() + 1],
            size,
            num_classes: self.num_classes,
        }
    }

    /// Total stored blocks (the max depth of every stage summed): 37 for AttentiveNAS.
    pub fn max_blocks(&self) -> usize {
        self.stages.iter().map(|s| s.max_depth()).sum()
    }

    /// Every stored block of the supernet with its allocation sizes. The max mid is the max of the
    /// active formula over all input-width and expand choices, so an active mid never exceeds it.
    pub fn stored_blocks(&self) -> Vec<StoredBlock> {
        let mut out = Vec::with_capacity(self.max_blocks());
        let mut in_choices: &[usize] = &self.stem.width;
        for (si, st) in self.stages.iter().enumerate() {
            for b in 0..st.max_depth() {
                let c_in_choices = if b == 0 { in_choices } else { &st.width[..] };
                let max_mid = c_in_choices
                    .iter()
                    .flat_map(|&c| st.expand.iter().map(move |&t| (c, t)))
                    .map(|(c, t)| self.mid_channels(c, t))
                    .max()
                    .unwrap_or(0);
                out.push(StoredBlock {
                    stage: si,
                    index: b,
                    global: out.len(),
                    stride: if b == 0 { st.stride } else { 1 },
                    se: st.se,
                    has_expand_conv: st.has_expand_conv(),
                    max_c_in: c_in_choices.iter().copied().max().unwrap_or(0),
                    max_c_out: st.max_width(),
                    max_mid,
                    max_kernel: st.max_kernel(),
                    max_se_mid: if st.se { self.se_mid_channels(max_mid) } else { 0 },
                });
            }
            in_choices = &st.width;
        }
        out
    }
}

/// Iterator over the active blocks of an arch (no allocation: the FLOPs count runs it per sample).
pub struct ActiveBlocks<'a> {
    space: &'a Space,
    arch: &'a Arch,
    stage: usize,
    index: usize,
    /// Global index of the current stage's block 0.
    stage_start: usize,
    c_in: usize,
    size: usize,
}

impl Iterator for ActiveBlocks<'_> {
    type Item = ActiveBlock;

    fn next(&mut self) -> Option<ActiveBlock> {
        let stages = &self.space.stages;
        while self.stage < stages.len() && self.index >= self.arch.depth[self.stage] {
            self.stage_start += stages[self.stage].max_depth();
            self.stage += 1;
            self.index = 0;
        }
        let si = self.stage;
        let st = stages.get(si)?;
        let stride = if self.index == 0 { st.stride } else { 1 };
        let c_in = self.c_in;
        let c_out = self.arch.width[si + 1];
        let expand = self.arch.expand[si];
        let mid = self.space.mid_channels(c_in, expand);
        let size_in = self.size;
        let size_out = strided_size(size_in, stride);
        let block = ActiveBlock {
            stage: si,
            index: self.index,
            global: self.stage_start + self.index,
            c_in,
            c_out,
            stride,
            kernel: self.arch.kernel[si],
            expand,
            mid,
            has_expand_conv: st.has_expand_conv(),
            se: st.se,
            se_mid: if st.se { self.space.se_mid_channels(mid) } else { 0 },
            identity_shortcut: c_in == c_out && stride == 1,
            shortcut_conv: c_in != c_out,
            size_in,
            size_out,
        };
        self.c_in = c_out;
        self.size = size_out;
        self.index += 1;
        Some(block)
    }
}
