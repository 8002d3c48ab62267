//! Crop geometry and transforms: RandomResizedCrop's scale and ratio ranges over many draws, the
//! evaluation crop against torchvision's arithmetic, resize sanity (identity, constant images, a
//! mirrored source), flip, normalisation, determinism per seed.

use attnas::data::augment::{
    eval_center_crop, hflip_in_place, normalize_nhwc, random_resized_crop, resize_crop_into, transform_into, CropBox,
    RandomCropParams, ResizeFilter, TransformConfig,
};
use attnas::data::decode::RgbImage;
use attnas::data::rng::sample_rng;
use fast_image_resize::Resizer;

#[test]
fn random_resized_crop_stays_in_range() {
    let p = RandomCropParams::default();
    for (w, h) in [(500u32, 375u32), (68, 121), (2400, 1600), (300, 40)] {
        let (mut sum_scale, mut n) = (0.0, 0usize);
        let (mut min_s, mut max_s, mut min_r, mut max_r) = (f64::MAX, 0f64, f64::MAX, 0f64);
        for i in 0..5000u64 {
            let b = random_resized_crop(w, h, &p, &mut sample_rng(3, 0, i));
            assert!(b.left >= 0.0 && b.top >= 0.0 && b.width >= 1.0 && b.height >= 1.0, "{b:?}");
            assert!(b.left + b.width <= w as f64 && b.top + b.height <= h as f64, "{w}x{h}: {b:?}");
            assert!(b.left.fract() == 0.0 && b.width.fract() == 0.0, "integer boxes as torchvision");
            let s = b.width * b.height / (w as f64 * h as f64);
            let r = b.width / b.height;
            // Rounding the sides to whole pixels moves scale and ratio by about one pixel's worth.
            let slack = 1.0 / b.width.min(b.height);
            if (w, h) != (300, 40) {
                assert!(s >= 0.08 * (1.0 - 2.0 * slack) - 1e-9 && s <= 1.0, "{w}x{h}: scale {s}");
                assert!(r >= 0.75 * (1.0 - 2.0 * slack) && r <= 4.0 / 3.0 * (1.0 + 2.0 * slack), "{w}x{h}: ratio {r}");
            }
            sum_scale += s;
            n += 1;
            min_s = min_s.min(s);
            max_s = max_s.max(s);
            min_r = min_r.min(r);
            max_r = max_r.max(r);
        }
        let mean = sum_scale / n as f64;
        println!("{w}x{h}: scale {min_s:.3}..{max_s:.3} (mean {mean:.3}), ratio {min_r:.3}..{max_r:.3}");
        if (w, h) == (2400, 1600) {
            // Uniform scale on [0.08, 1], but for a 3:2 image a box fits only when scale <= ratio / 1.5:
            // E[scale | fits] = 0.3885 (integrated numerically); 5000 draws give +-0.003 (1 sigma).
            assert!((mean - 0.3885).abs() < 0.015, "mean scale {mean}");
            // The extremes are reached: scale down to 0.08 and up to the largest that fits (4/3 / 1.5 = 0.889).
            assert!(min_s < 0.09 && max_s > 0.85 && min_r < 0.76 && max_r > 1.32);
        }
        if (w, h) == (300, 40) {
            // Ratio 7.5 is outside [3/4, 4/3]: large draws fail, small ones fit; the fallback is a 4/3 centre crop.
            assert!(max_r <= 4.0 / 3.0 * 1.1);
        }
    }
}

#[test]
fn random_resized_crop_fallback_is_centered() {
    // A 1000x10 strip: no try can fit (ratio range far from 100), so the fallback: height 10, width 13.
    let b = random_resized_crop(
        1000,
        10,
        &RandomCropParams { scale: (0.9, 1.0), ..Default::default() },
        &mut sample_rng(0, 0, 0),
    );
    assert_eq!(b, CropBox { left: 493.0, top: 0.0, width: 13.0, height: 10.0 });
}

#[test]
fn eval_crop_matches_torchvision() {
    // 500x375: Resize(256) -> 341x256 (int(256 * 500 / 375) = 341), CenterCrop(224): left
    // round((341 - 224) / 2) = round(58.5) = 58 (ties to even), top 16; scale back by 500/341 and 375/256.
    let b = eval_center_crop(500, 375, 256, 224);
    let (sx, sy) = (500.0 / 341.0, 375.0 / 256.0);
    let want = CropBox { left: 58.0 * sx, top: 16.0 * sy, width: 224.0 * sx, height: 224.0 * sy };
    for (g, w) in [(b.left, want.left), (b.top, want.top), (b.width, want.width), (b.height, want.height)] {
        assert!((g - w).abs() < 1e-9, "{b:?} vs {want:?}");
    }
    // Square: the centre 224/256 of it.
    let b = eval_center_crop(512, 512, 256, 224);
    assert_eq!(b, CropBox { left: 32.0, top: 32.0, width: 448.0, height: 448.0 });
    assert_eq!(TransformConfig::eval(224).eval_resize(), 256);
    assert_eq!(TransformConfig::eval(288).eval_resize(), 329);
    let whole = TransformConfig { eval_crop_fraction: 1.0, ..TransformConfig::eval(28) };
    assert_eq!(whole.eval_resize(), 28, "fraction 1: the whole short side");
    assert_eq!(
        eval_center_crop(28, 28, whole.eval_resize(), 28),
        CropBox { left: 0.0, top: 0.0, width: 28.0, height: 28.0 }
    );
}

fn ramp(w: u32, h: u32) -> RgbImage {
    RgbImage::new(
        w,
        h,
        (0..h).flat_map(|y| (0..w).flat_map(move |x| [(x * 7 % 256) as u8, (y * 5 % 256) as u8, 77])).collect(),
    )
}

#[test]
fn resize_identity_constant_and_mirror() {
    let mut rs = Resizer::new();
    let src = ramp(37, 23);
    let full = CropBox { left: 0.0, top: 0.0, width: 37.0, height: 23.0 };
    for f in [ResizeFilter::Bilinear, ResizeFilter::Bicubic] {
        let mut out = vec![0u8; 37 * 23 * 3];
        resize_crop_into(&mut rs, &src, full, f, &mut out, 37, 23).unwrap();
        assert_eq!(out, src.data, "{f:?}: same size, whole image must be the identity");
        // An integer-aligned crop at scale 1 is a plain copy.
        let mut out = vec![0u8; 10 * 5 * 3];
        resize_crop_into(&mut rs, &src, CropBox { left: 4.0, top: 3.0, width: 10.0, height: 5.0 }, f, &mut out, 10, 5)
            .unwrap();
        for y in 0..5 {
            for x in 0..10 {
                assert_eq!(&out[(y * 10 + x) * 3..][..3], src.pixel(x as u32 + 4, y as u32 + 3), "{f:?} ({x},{y})");
            }
        }
        // A constant image stays constant at any scale (filter weights sum to one).
        let c = RgbImage::new(50, 30, [9u8, 200, 31].repeat(1500));
        let mut out = vec![0u8; 17 * 41 * 3];
        resize_crop_into(&mut rs, &c, CropBox { left: 3.5, top: 1.25, width: 40.0, height: 27.0 }, f, &mut out, 17, 41)
            .unwrap();
        assert!(out.chunks_exact(3).all(|p| p == [9, 200, 31]), "{f:?}");
    }
    // Resizing a mirrored source equals mirroring the resized image.
    let mut mirrored = src.data.clone();
    hflip_in_place(&mut mirrored, 37, 23);
    let m = RgbImage::new(37, 23, mirrored);
    let (mut a, mut b) = (vec![0u8; 16 * 16 * 3], vec![0u8; 16 * 16 * 3]);
    resize_crop_into(&mut rs, &src, full, ResizeFilter::Bicubic, &mut a, 16, 16).unwrap();
    resize_crop_into(&mut rs, &m, full, ResizeFilter::Bicubic, &mut b, 16, 16).unwrap();
    hflip_in_place(&mut b, 16, 16);
    assert_eq!(a, b);
}

#[test]
fn hflip_and_normalize() {
    let mut px = vec![1, 2, 3, 4, 5, 6, 7, 8, 9];
    hflip_in_place(&mut px, 3, 1);
    assert_eq!(px, [7, 8, 9, 4, 5, 6, 1, 2, 3]);
    let n = normalize_nhwc(&[0, 255, 124]);
    let want = [-0.485 / 0.229, (1.0 - 0.456) / 0.224, (124.0 / 255.0 - 0.406) / 0.225];
    for (g, w) in n.iter().zip(want) {
        assert!((g - w).abs() < 1e-5, "{n:?}");
    }
}

#[test]
fn transforms_are_deterministic_per_seed() {
    let src = ramp(120, 90);
    let mut rs = Resizer::new();
    let run = |cfg: &TransformConfig, seed: u64, idx: u64, rs: &mut Resizer| {
        let mut out = vec![0u8; (cfg.crop * cfg.crop * 3) as usize];
        transform_into(rs, &src, cfg, &mut sample_rng(seed, 0, idx), &mut out).unwrap();
        out
    };
    let train = TransformConfig::train(64);
    assert_eq!(run(&train, 5, 1, &mut rs), run(&train, 5, 1, &mut rs));
    assert_ne!(run(&train, 5, 1, &mut rs), run(&train, 6, 1, &mut rs));
    assert_ne!(run(&train, 5, 1, &mut rs), run(&train, 5, 2, &mut rs));
    // Evaluation ignores the random stream; a larger crop is allowed.
    let eval = TransformConfig::eval(96);
    assert_eq!(run(&eval, 5, 1, &mut rs), run(&eval, 6, 9, &mut rs));
}
