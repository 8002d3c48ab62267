//! The AttentiveNAS image transforms (spec 3.5 and 5.2) on 8-bit RGB, writing one HWC sample slot of a
//! batch. Training: RandomResizedCrop (bicubic) -> horizontal flip (p = 0.5) -> AutoAugment v0.
//! Evaluation: resize the short side to 256 (bilinear, as the eval config), centre-crop 224. For other crop
//! sizes the evaluation resize keeps the 224/256 = 0.875 ratio, or the ratio `eval_crop_fraction` sets
//! (timm's `crop_pct`; 1.0 keeps the whole image, for small images such as Fashion-MNIST's). Normalisation with the ImageNet mean and
//! std happens where the u8 batch becomes f32 ([`normalize_nhwc`], the reference for the GPU kernel).

pub mod crop;
pub mod resize;

use fast_image_resize::Resizer;
use rand::RngExt;

use super::autoaugment;
use super::decode::RgbImage;
use super::rng::SampleRng;
pub use crop::{eval_center_crop, random_resized_crop, CropBox, RandomCropParams};
pub use resize::{resize_crop_into, ResizeFilter};

/// ImageNet mean and std per RGB channel, on the [0, 1] scale.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// What the loader does to each image.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformConfig {
    /// Output side (224 as the original; larger for the large resolutions).
    pub crop: u32,
    /// Training augmentation (random crop, flip, AutoAugment) or the evaluation transform.
    pub train: bool,
    pub random_crop: RandomCropParams,
    pub flip: bool,
    pub autoaugment: bool,
    pub train_filter: ResizeFilter,
    pub eval_filter: ResizeFilter,
    /// Evaluation: the centre crop's share of the resized short side (0.875 = 224 / 256, spec 5.2).
    pub eval_crop_fraction: f64,
}

/// The evaluation crop's share of the resized short side in the original (224 / 256).
pub const EVAL_CROP_FRACTION: f64 = 0.875;

impl TransformConfig {
    pub fn train(crop: u32) -> Self {
        TransformConfig {
            crop,
            train: true,
            random_crop: RandomCropParams::default(),
            flip: true,
            autoaugment: true,
            train_filter: ResizeFilter::Bicubic,
            eval_filter: ResizeFilter::Bilinear,
            eval_crop_fraction: EVAL_CROP_FRACTION,
        }
    }
    pub fn eval(crop: u32) -> Self {
        TransformConfig { train: false, flip: false, autoaugment: false, ..Self::train(crop) }
    }
    /// The evaluation short-side size: crop / `eval_crop_fraction` (256 for 224 at 0.875).
    pub fn eval_resize(&self) -> u32 {
        ((self.crop as f64 / self.eval_crop_fraction).round() as u32).max(self.crop)
    }
}

/// Mirrors an HWC RGB image left-right in place.
pub fn hflip_in_place(pixels: &mut [u8], width: u32, height: u32) {
    let row = width as usize * 3;
    for r in pixels.chunks_exact_mut(row).take(height as usize) {
        let (mut a, mut b) = (0usize, width as usize - 1);
        while a < b {
            for c in 0..3 {
                r.swap(a * 3 + c, b * 3 + c);
            }
            a += 1;
            b -= 1;
        }
    }
}

/// Writes the transformed `img` into `dst` (`crop x crop x 3` bytes). Training draws come from `rng`.
pub fn transform_into(
    resizer: &mut Resizer,
    img: &RgbImage,
    cfg: &TransformConfig,
    rng: &mut SampleRng,
    dst: &mut [u8],
) -> Result<(), String> {
    let side = cfg.crop;
    if cfg.train {
        let b = random_resized_crop(img.width, img.height, &cfg.random_crop, rng);
        resize_crop_into(resizer, img, b, cfg.train_filter, dst, side, side)?;
        if cfg.flip && rng.random_bool(0.5) {
            hflip_in_place(dst, side, side);
        }
        if cfg.autoaugment {
            autoaugment::apply_v0(dst, side, side, rng);
        }
        Ok(())
    } else {
        let b = eval_center_crop(img.width, img.height, cfg.eval_resize(), side);
        resize_crop_into(resizer, img, b, cfg.eval_filter, dst, side, side)
    }
}

/// u8 NHWC -> f32 NHWC, `(v / 255 - mean[c]) / std[c]`.
pub fn normalize_nhwc(pixels: &[u8]) -> Vec<f32> {
    let mut out = vec![0f32; pixels.len()];
    normalize_nhwc_into(pixels, &mut out);
    out
}

/// [`normalize_nhwc`] into a buffer of the same length (reused across batches). The formula is the
/// op reference `backend::cpu::input::normalize_u8_nhwc`, which the trainer runs on the device
/// (`ops::InputOps`) with these constants.
pub fn normalize_nhwc_into(pixels: &[u8], out: &mut [f32]) {
    crate::backend::cpu::input::normalize_u8_nhwc(pixels, IMAGENET_MEAN, IMAGENET_STD, out);
}
