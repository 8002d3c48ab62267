//! Crop + resize through fast_image_resize (SIMD convolution). Bicubic is its Catmull-Rom filter
//! (a = -0.5, PIL's BICUBIC), bilinear its triangle filter; like PIL, the kernel widens when shrinking
//! (antialiasing), so the result matches torchvision's PIL path up to rounding.

use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::crop::CropBox;
use crate::data::decode::RgbImage;

/// Resampling filter for the resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResizeFilter {
    Bilinear,
    Bicubic,
}

/// Resamples `crop` of `src` into `dst` (`out_w x out_h x 3` bytes, HWC). `resizer` keeps its scratch
/// buffers between calls; use one per thread.
pub fn resize_crop_into(
    resizer: &mut Resizer,
    src: &RgbImage,
    crop: CropBox,
    filter: ResizeFilter,
    dst: &mut [u8],
    out_w: u32,
    out_h: u32,
) -> Result<(), String> {
    let src_view = ImageRef::new(src.width, src.height, &src.data, PixelType::U8x3)
        .map_err(|e| format!("resize source {}x{}: {e}", src.width, src.height))?;
    let mut dst_view = Image::from_slice_u8(out_w, out_h, dst, PixelType::U8x3)
        .map_err(|e| format!("resize destination {out_w}x{out_h}: {e}"))?;
    let filter = match filter {
        ResizeFilter::Bilinear => FilterType::Bilinear,
        ResizeFilter::Bicubic => FilterType::CatmullRom,
    };
    let options = ResizeOptions::new().resize_alg(ResizeAlg::Convolution(filter)).crop(
        crop.left,
        crop.top,
        crop.width,
        crop.height,
    );
    resizer.resize(&src_view, &mut dst_view, &options).map_err(|e| format!("resize: {e}"))
}
