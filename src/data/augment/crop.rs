//! Crop geometry: RandomResizedCrop's box (torchvision's algorithm: scale (0.08, 1) of the area, log-uniform
//! aspect ratio in (3/4, 4/3), ten tries, then a centre crop clamped to the ratio range) and the
//! evaluation box (resize the short side to `resize`, centre-crop `crop`, expressed as one box in source
//! pixels so a single resize does both).

use rand::RngExt;

use crate::data::rng::SampleRng;

/// A region of the source image in (fractional) pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CropBox {
    pub left: f64,
    pub top: f64,
    pub width: f64,
    pub height: f64,
}

/// RandomResizedCrop parameters (spec 3.5).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RandomCropParams {
    pub scale: (f64, f64),
    pub ratio: (f64, f64),
}

impl Default for RandomCropParams {
    fn default() -> Self {
        RandomCropParams { scale: (0.08, 1.0), ratio: (3.0 / 4.0, 4.0 / 3.0) }
    }
}

/// Draws a RandomResizedCrop box in integer pixels of a `width x height` image.
pub fn random_resized_crop(width: u32, height: u32, p: &RandomCropParams, rng: &mut SampleRng) -> CropBox {
    let (w, h) = (width as f64, height as f64);
    let area = w * h;
    let (log_lo, log_hi) = (p.ratio.0.ln(), p.ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.random_range(p.scale.0..p.scale.1);
        let aspect = rng.random_range(log_lo..log_hi).exp();
        let cw = (target_area * aspect).sqrt().round();
        let ch = (target_area / aspect).sqrt().round();
        if cw > 0.0 && ch > 0.0 && cw <= w && ch <= h {
            let top = rng.random_range(0..=(h - ch) as u32) as f64;
            let left = rng.random_range(0..=(w - cw) as u32) as f64;
            return CropBox { left, top, width: cw, height: ch };
        }
    }
    // Fallback: the whole image, trimmed to the nearest allowed aspect ratio, centred.
    let in_ratio = w / h;
    let (cw, ch) = if in_ratio < p.ratio.0 {
        (w, (w / p.ratio.0).round())
    } else if in_ratio > p.ratio.1 {
        ((h * p.ratio.1).round(), h)
    } else {
        (w, h)
    };
    CropBox { left: ((w - cw) / 2.0).floor(), top: ((h - ch) / 2.0).floor(), width: cw, height: ch }
}

/// The evaluation box: the short side resized to `resize` (the long side scaled to match, truncated as
/// torchvision does), then the centre `crop x crop`, mapped back to source pixels.
pub fn eval_center_crop(width: u32, height: u32, resize: u32, crop: u32) -> CropBox {
    let (w, h) = (width as f64, height as f64);
    let (rw, rh) = if width <= height {
        (resize as f64, (resize as f64 * h / w).floor())
    } else {
        ((resize as f64 * w / h).floor(), resize as f64)
    };
    let (sx, sy) = (w / rw, h / rh);
    let c = crop as f64;
    // Crop offsets in the resized image, rounded as torchvision's CenterCrop does (Python's round: ties
    // to even).
    let left = ((rw - c) / 2.0).round_ties_even();
    let top = ((rh - c) / 2.0).round_ties_even();
    CropBox { left: left * sx, top: top * sy, width: c * sx, height: c * sy }
}
