//! AutoAugment "v0" (the TPU EfficientNet ImageNet policy), as AttentiveNAS's `auto_augment_tf.py`
//! applies it (spec 3.5): one of 25 sub-policies uniformly, each of its two ops fires with its own
//! probability, the magnitude is drawn from N(m, 0.5) clipped to [0, 10], geometric ops fill with
//! (124, 116, 104) and resample with nearest, bilinear or bicubic chosen at random.
//!
//! Each op reproduces the PIL function the original calls, on 8-bit RGB HWC:
//! - point ops (Invert, Solarize, SolarizeAdd, Posterize, AutoContrast, Equalize) are per-channel lookup
//!   tables built exactly as `ImageOps` builds them (LUT entries clipped to 255 as `Image.point` does);
//! - Color / Contrast / Brightness are `ImageEnhance` blends: `trunc(degenerate + f * (img - degenerate))`
//!   clipped to [0, 255] in float, with PIL's grey `L = (19595 R + 38470 G + 7471 B + 2^15) >> 16`;
//! - Rotate / Shear / Translate are `Image.transform(AFFINE)`: output pixel centre (x + .5, y + .5) maps
//!   through the inverse matrix; outside the source -> fill; nearest takes floor, bilinear and bicubic
//!   sample around (sx - .5, sy - .5) with edge clamping, bicubic with PIL's a = -1 cubic.

use rand::RngExt;

use super::rng::{normal, SampleRng};

/// Fill colour for pixels that geometric ops bring in from outside the image.
pub const FILL: [u8; 3] = [124, 116, 104];
/// Magnitudes live on [0, MAX_LEVEL].
pub const MAX_LEVEL: f64 = 10.0;
/// Standard deviation of the magnitude noise.
pub const MAGNITUDE_STD: f64 = 0.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    AutoContrast,
    Equalize,
    Invert,
    Rotate,
    Posterize,
    Solarize,
    SolarizeAdd,
    Color,
    Contrast,
    Brightness,
    ShearX,
    ShearY,
    TranslateYRel,
}

/// Resampling for geometric ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resample {
    Nearest,
    Bilinear,
    Bicubic,
}

/// One (op, probability, magnitude) entry of a sub-policy.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolicyOp {
    pub op: Op,
    pub prob: f64,
    pub magnitude: f64,
}

const fn p(op: Op, prob: f64, magnitude: f64) -> PolicyOp {
    PolicyOp { op, prob, magnitude }
}

use Op::*;
/// The 25 sub-policies of v0 (spec 3.5), in order.
pub const POLICY_V0: [[PolicyOp; 2]; 25] = [
    [p(Equalize, 0.8, 1.0), p(ShearY, 0.8, 4.0)],
    [p(Color, 0.4, 9.0), p(Equalize, 0.6, 3.0)],
    [p(Color, 0.4, 1.0), p(Rotate, 0.6, 8.0)],
    [p(Solarize, 0.8, 3.0), p(Equalize, 0.4, 7.0)],
    [p(Solarize, 0.4, 2.0), p(Solarize, 0.6, 2.0)],
    [p(Color, 0.2, 0.0), p(Equalize, 0.8, 8.0)],
    [p(Equalize, 0.4, 8.0), p(SolarizeAdd, 0.8, 3.0)],
    [p(ShearX, 0.2, 9.0), p(Rotate, 0.6, 8.0)],
    [p(Color, 0.6, 1.0), p(Equalize, 1.0, 2.0)],
    [p(Invert, 0.4, 9.0), p(Rotate, 0.6, 0.0)],
    [p(Equalize, 1.0, 9.0), p(ShearY, 0.6, 3.0)],
    [p(Color, 0.4, 7.0), p(Equalize, 0.6, 0.0)],
    [p(Posterize, 0.4, 6.0), p(AutoContrast, 0.4, 7.0)],
    [p(Solarize, 0.6, 8.0), p(Color, 0.6, 9.0)],
    [p(Solarize, 0.2, 4.0), p(Rotate, 0.8, 9.0)],
    [p(Rotate, 1.0, 7.0), p(TranslateYRel, 0.8, 9.0)],
    [p(ShearX, 0.0, 0.0), p(Solarize, 0.8, 4.0)],
    [p(ShearY, 0.8, 0.0), p(Color, 0.6, 4.0)],
    [p(Color, 1.0, 0.0), p(Rotate, 0.6, 2.0)],
    [p(Equalize, 0.8, 4.0), p(Equalize, 0.0, 8.0)],
    [p(Equalize, 1.0, 4.0), p(AutoContrast, 0.6, 2.0)],
    [p(ShearY, 0.4, 7.0), p(SolarizeAdd, 0.6, 7.0)],
    [p(Posterize, 0.8, 2.0), p(Solarize, 0.6, 10.0)],
    [p(Solarize, 0.6, 8.0), p(Equalize, 0.6, 1.0)],
    [p(Color, 0.8, 6.0), p(Rotate, 0.4, 5.0)],
];

/// Level -> argument of an op (before the random sign of geometric ops).
pub fn level_to_arg(op: Op, m: f64) -> f64 {
    let l = m / MAX_LEVEL;
    match op {
        Rotate => 30.0 * l,
        ShearX | ShearY => 0.3 * l,
        TranslateYRel => 0.45 * l,
        Color | Contrast | Brightness => 0.1 + 1.8 * l,
        Solarize => (256.0 * l).trunc(),
        SolarizeAdd => (110.0 * l).trunc(),
        Posterize => (4.0 * l).trunc() + 4.0,
        AutoContrast | Equalize | Invert => 0.0,
    }
}

fn is_geometric(op: Op) -> bool {
    matches!(op, Rotate | ShearX | ShearY | TranslateYRel)
}

/// Applies a random v0 sub-policy to `img` (HWC RGB, `w x h`) in place.
pub fn apply_v0(img: &mut [u8], w: u32, h: u32, rng: &mut SampleRng) {
    let sub = &POLICY_V0[rng.random_range(0..POLICY_V0.len())];
    for po in sub {
        if po.prob < 1.0 && rng.random::<f64>() > po.prob {
            continue;
        }
        let m = normal(rng, po.magnitude, MAGNITUDE_STD).clamp(0.0, MAX_LEVEL);
        let mut arg = level_to_arg(po.op, m);
        let mut resample = Resample::Nearest;
        if is_geometric(po.op) {
            if rng.random::<f64>() > 0.5 {
                arg = -arg;
            }
            resample = [Resample::Nearest, Resample::Bilinear, Resample::Bicubic][rng.random_range(0..3)];
        }
        apply_op(img, w, h, po.op, arg, resample);
    }
}

/// Applies one op with its argument (degrees, shear factor, fraction of height, enhance factor, threshold,
/// addend or bits, as [`level_to_arg`] gives them, sign included).
pub fn apply_op(img: &mut [u8], w: u32, h: u32, op: Op, arg: f64, resample: Resample) {
    match op {
        Invert => apply_lut_all(img, &std::array::from_fn(|i| 255 - i as u8)),
        Solarize => apply_lut_all(img, &solarize_lut(arg as i64)),
        SolarizeAdd => apply_lut_all(img, &solarize_add_lut(arg as i64, 128)),
        Posterize => {
            let bits = arg as u32;
            if bits < 8 {
                let mask = !((1u32 << (8 - bits)) - 1) as u8;
                apply_lut_all(img, &std::array::from_fn(|i| i as u8 & mask));
            }
        }
        AutoContrast => per_channel_lut(img, autocontrast_lut),
        Equalize => per_channel_lut(img, equalize_lut),
        Color => {
            for px in img.chunks_exact_mut(3) {
                let g = grey(px);
                for v in px.iter_mut() {
                    *v = blend(g, *v, arg as f32);
                }
            }
        }
        Contrast => {
            let n = (img.len() / 3).max(1) as f64;
            let mean = img.chunks_exact(3).map(|px| grey(px) as f64).sum::<f64>() / n;
            let mean = (mean + 0.5) as u8;
            for v in img.iter_mut() {
                *v = blend(mean, *v, arg as f32);
            }
        }
        Brightness => {
            for v in img.iter_mut() {
                *v = blend(0, *v, arg as f32);
            }
        }
        Rotate => {
            let (cx, cy) = (w as f64 / 2.0, h as f64 / 2.0);
            let t = -arg.to_radians();
            let round15 = |v: f64| (v * 1e15).round() / 1e15;
            let (a, b, d, e) = (round15(t.cos()), round15(t.sin()), round15(-t.sin()), round15(t.cos()));
            let c = a * -cx + b * -cy + cx;
            let f = d * -cx + e * -cy + cy;
            affine(img, w, h, [a, b, c, d, e, f], resample);
        }
        ShearX => affine(img, w, h, [1.0, arg, 0.0, 0.0, 1.0, 0.0], resample),
        ShearY => affine(img, w, h, [1.0, 0.0, 0.0, arg, 1.0, 0.0], resample),
        TranslateYRel => affine(img, w, h, [1.0, 0.0, 0.0, 0.0, 1.0, arg * h as f64], resample),
    }
}

/// PIL's `convert("L")` of one RGB pixel.
fn grey(px: &[u8]) -> u8 {
    ((px[0] as u32 * 19595 + px[1] as u32 * 38470 + px[2] as u32 * 7471 + 0x8000) >> 16) as u8
}

/// PIL's `Image.blend(degenerate, image, factor)` for one 8-bit value.
fn blend(degenerate: u8, v: u8, factor: f32) -> u8 {
    let t = degenerate as f32 + factor * (v as f32 - degenerate as f32);
    if t <= 0.0 {
        0
    } else if t >= 255.0 {
        255
    } else {
        t as u8
    }
}

fn apply_lut_all(img: &mut [u8], lut: &[u8; 256]) {
    for v in img.iter_mut() {
        *v = lut[*v as usize];
    }
}

fn per_channel_lut(img: &mut [u8], make: fn(&[u64; 256]) -> [u8; 256]) {
    for c in 0..3 {
        let mut hist = [0u64; 256];
        for px in img.chunks_exact(3) {
            hist[px[c] as usize] += 1;
        }
        let lut = make(&hist);
        for px in img.chunks_exact_mut(3) {
            px[c] = lut[px[c] as usize];
        }
    }
}

/// `ImageOps.solarize`: values at or above the threshold are inverted.
pub fn solarize_lut(threshold: i64) -> [u8; 256] {
    std::array::from_fn(|i| if (i as i64) < threshold { i as u8 } else { 255 - i as u8 })
}

/// timm's `solarize_add`: values below the threshold get `add`, clipped to 255.
pub fn solarize_add_lut(add: i64, threshold: i64) -> [u8; 256] {
    std::array::from_fn(|i| if (i as i64) < threshold { (i as i64 + add).clamp(0, 255) as u8 } else { i as u8 })
}

/// `ImageOps.autocontrast` (cutoff 0) for one channel's histogram.
pub fn autocontrast_lut(hist: &[u64; 256]) -> [u8; 256] {
    let lo = hist.iter().position(|&n| n > 0);
    let hi = hist.iter().rposition(|&n| n > 0);
    match (lo, hi) {
        (Some(lo), Some(hi)) if hi > lo => {
            let scale = 255.0 / (hi - lo) as f64;
            let offset = -(lo as f64) * scale;
            std::array::from_fn(|i| ((i as f64 * scale + offset) as i64).clamp(0, 255) as u8)
        }
        _ => std::array::from_fn(|i| i as u8),
    }
}

/// `ImageOps.equalize` for one channel's histogram.
pub fn equalize_lut(hist: &[u64; 256]) -> [u8; 256] {
    let nonzero: Vec<u64> = hist.iter().copied().filter(|&n| n > 0).collect();
    let identity = std::array::from_fn(|i| i as u8);
    if nonzero.len() <= 1 {
        return identity;
    }
    let step = (nonzero.iter().sum::<u64>() - nonzero[nonzero.len() - 1]) / 255;
    if step == 0 {
        return identity;
    }
    let mut n = step / 2;
    std::array::from_fn(|i| {
        let v = (n / step).min(255) as u8;
        n += hist[i];
        v
    })
}

/// `Image.transform(size, AFFINE, (a, b, c, d, e, f), resample, fillcolor=FILL)`.
pub fn affine(img: &mut [u8], w: u32, h: u32, m: [f64; 6], resample: Resample) {
    let src = img.to_vec();
    let (wu, hu) = (w as usize, h as usize);
    let (wf, hf) = (w as f64, h as f64);
    let clamp_x = |x: i64| x.clamp(0, wu as i64 - 1) as usize * 3;
    let clamp_y = |y: i64| y.clamp(0, hu as i64 - 1) as usize * wu * 3;
    for y in 0..hu {
        let yo = y as f64 + 0.5;
        for x in 0..wu {
            let xo = x as f64 + 0.5;
            // PIL's order of operations: a * x + b * y + c.
            let sx = m[0] * xo + m[1] * yo + m[2];
            let sy = m[3] * xo + m[4] * yo + m[5];
            let out = &mut img[(y * wu + x) * 3..][..3];
            if !(sx >= 0.0 && sx < wf && sy >= 0.0 && sy < hf) {
                out.copy_from_slice(&FILL);
                continue;
            }
            match resample {
                Resample::Nearest => {
                    let at = (sy as usize * wu + sx as usize) * 3;
                    out.copy_from_slice(&src[at..at + 3]);
                }
                Resample::Bilinear => {
                    let (xs, ys) = (sx - 0.5, sy - 0.5);
                    let (x0, y0) = (floor_from_half(xs), floor_from_half(ys));
                    let (dx, dy) = ((xs - x0) as f32, (ys - y0) as f32);
                    let (x0, y0) = (x0 as i64, y0 as i64);
                    let (c0, c1) = (clamp_x(x0), clamp_x(x0 + 1));
                    let (r0, r1) = (clamp_y(y0), clamp_y(y0 + 1));
                    let px = |at: usize| -> [f32; 3] { [src[at] as f32, src[at + 1] as f32, src[at + 2] as f32] };
                    let (a, b, c, d) = (px(r0 + c0), px(r0 + c1), px(r1 + c0), px(r1 + c1));
                    for (ch, v) in out.iter_mut().enumerate() {
                        let top = a[ch] + (b[ch] - a[ch]) * dx;
                        let bot = c[ch] + (d[ch] - c[ch]) * dx;
                        *v = clip_trunc((top + (bot - top) * dy) as f64);
                    }
                }
                Resample::Bicubic => {
                    let (xs, ys) = (sx - 0.5, sy - 0.5);
                    let (x0, y0) = (floor_from_half(xs), floor_from_half(ys));
                    let (wx, wy) = (cubic_weights((xs - x0) as f32), cubic_weights((ys - y0) as f32));
                    let (x0, y0) = (x0 as i64, y0 as i64);
                    let stride = wu * 3;
                    let mut acc = [0f32; 3];
                    if x0 >= 1 && y0 >= 1 && x0 + 2 < wu as i64 && y0 + 2 < hu as i64 {
                        // Interior: the 4x4 window without clamping, one slice (bounds check) per row.
                        let base = (y0 as usize - 1) * stride + (x0 as usize - 1) * 3;
                        for (j, wr) in wy.iter().enumerate() {
                            let r = &src[base + j * stride..base + j * stride + 12];
                            for ch in 0..3 {
                                let h = wx[0] * r[ch] as f32
                                    + wx[1] * r[3 + ch] as f32
                                    + wx[2] * r[6 + ch] as f32
                                    + wx[3] * r[9 + ch] as f32;
                                acc[ch] += wr * h;
                            }
                        }
                    } else {
                        let cols = [clamp_x(x0 - 1), clamp_x(x0), clamp_x(x0 + 1), clamp_x(x0 + 2)];
                        for (j, wr) in wy.iter().enumerate() {
                            let row = &src[clamp_y(y0 - 1 + j as i64)..];
                            for ch in 0..3 {
                                let h = wx[0] * row[cols[0] + ch] as f32
                                    + wx[1] * row[cols[1] + ch] as f32
                                    + wx[2] * row[cols[2] + ch] as f32
                                    + wx[3] * row[cols[3] + ch] as f32;
                                acc[ch] += wr * h;
                            }
                        }
                    }
                    for (v, a) in out.iter_mut().zip(acc) {
                        *v = clip_trunc(a as f64);
                    }
                }
            }
        }
    }
}

/// `v.floor()` for `v >= -0.5` (sample positions are inside the image before the half-pixel shift)
/// without a libm call: baseline x86-64 has no SSE4.1 `roundsd`, and `floor` per pixel dominated.
fn floor_from_half(v: f64) -> f64 {
    if v < 0.0 {
        -1.0
    } else {
        (v as i64) as f64
    }
}

/// Weights of PIL geometry's cubic (a = -1) for samples at offsets -1, 0, 1, 2 and fraction `d` in
/// [0, 1): its `p1 + d (p2 + d (p3 + d p4))` written per sample. They sum to one, so constant regions
/// stay exact. We sum in f32 and in another order than PIL's doubles, which can move a value sitting
/// within rounding of an integer by one level (bilinear likewise runs in f32).
fn cubic_weights(d: f32) -> [f32; 4] {
    let (d2, d3) = (d * d, d * d * d);
    [-d + 2.0 * d2 - d3, 1.0 - 2.0 * d2 + d3, d + d2 - d3, -d2 + d3]
}

fn clip_trunc(v: f64) -> u8 {
    if v <= 0.0 {
        0
    } else if v >= 255.0 {
        255
    } else {
        v as u8
    }
}
