//! Decoding: real grayscale and EXIF-rotated JPEGs from the sample; progressive, CMYK and EXIF-tagged
//! JPEGs written by jpeg-encoder (an encoder independent of the decoder); damaged streams.

mod data_common;

use attnas::data::decode::{decode_jpeg, is_jpeg};
use data_common::imagenet_sample;

/// A smooth test pattern (JPEG-friendly), RGB.
fn pattern(w: u32, h: u32) -> Vec<u8> {
    (0..h).flat_map(|y| (0..w).flat_map(move |x| [(x * 255 / w) as u8, (y * 255 / h) as u8, 128])).collect()
}

fn max_err(a: &[u8], b: &[u8]) -> i32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (*x as i32 - *y as i32).abs()).max().unwrap_or(0)
}

fn encode(
    data: &[u8],
    w: u16,
    h: u16,
    color: jpeg_encoder::ColorType,
    progressive: bool,
    exif: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 95);
    enc.set_progressive(progressive);
    if let Some(e) = exif {
        enc.add_exif_metadata(e).unwrap();
    }
    enc.encode(data, w, h, color).unwrap();
    out
}

#[test]
fn progressive_jpeg_decodes_like_baseline() {
    let (w, h) = (67u32, 45u32);
    let px = pattern(w, h);
    let prog = encode(&px, w as u16, h as u16, jpeg_encoder::ColorType::Rgb, true, None);
    assert!(prog.windows(2).any(|m| m == [0xFF, 0xC2]), "encoder did not write a progressive SOF2");
    let img = decode_jpeg(&prog, true).unwrap();
    assert_eq!((img.width, img.height), (w, h));
    let err = max_err(&img.data, &px);
    assert!(err <= 12, "progressive decode max error {err} (quality 95 allows a few levels)");
}

#[test]
fn cmyk_jpeg_becomes_rgb() {
    // CMYK for pure red, pure green and mid grey (K only), in 16x16 blocks.
    let blocks: [([u8; 4], [u8; 3]); 3] =
        [([0, 255, 255, 0], [255, 0, 0]), ([255, 0, 255, 0], [0, 255, 0]), ([0, 0, 0, 128], [127, 127, 127])];
    let (w, h) = (48u32, 16u32);
    let cmyk: Vec<u8> = (0..h).flat_map(|_| (0..w).flat_map(|x| blocks[(x / 16) as usize].0)).collect();
    let jpg = encode(&cmyk, w as u16, h as u16, jpeg_encoder::ColorType::Cmyk, false, None);
    let img = decode_jpeg(&jpg, true).unwrap();
    assert_eq!((img.width, img.height), (w, h));
    for (b, (_, rgb)) in blocks.iter().enumerate() {
        let got = img.pixel(b as u32 * 16 + 8, 8);
        let err = max_err(&got, rgb);
        assert!(err <= 8, "block {b}: got {got:?}, want {rgb:?}");
    }
}

/// A big-endian TIFF header with one IFD entry: Orientation (0x0112), SHORT, 1 value.
fn exif_orientation(o: u16) -> Vec<u8> {
    let mut e = b"MM\0\x2a\0\0\0\x08".to_vec();
    e.extend_from_slice(&1u16.to_be_bytes());
    e.extend_from_slice(&[0x01, 0x12, 0x00, 0x03, 0, 0, 0, 1]);
    e.extend_from_slice(&o.to_be_bytes());
    e.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    e
}

#[test]
fn exif_orientation_is_applied() {
    let (w, h) = (40u32, 24u32);
    let px = pattern(w, h);
    let at = |x: u32, y: u32| -> [u8; 3] {
        let i = ((y * w + x) * 3) as usize;
        [px[i], px[i + 1], px[i + 2]]
    };
    // (EXIF value, upright size, where upright pixel (x, y) comes from in the stored image)
    type Map = fn(u32, u32, u32, u32) -> (u32, u32);
    let cases: [(u16, (u32, u32), Map); 4] = [
        (1, (w, h), |x, y, _, _| (x, y)),
        (3, (w, h), |x, y, w, h| (w - 1 - x, h - 1 - y)),
        (6, (h, w), |x, y, _, h| (y, h - 1 - x)), // stored image is rotated 90 degrees clockwise to view
        (8, (h, w), |x, y, w, _| (w - 1 - y, x)),
    ];
    for (o, (uw, uh), src) in cases {
        let jpg = encode(&px, w as u16, h as u16, jpeg_encoder::ColorType::Rgb, false, Some(&exif_orientation(o)));
        let img = decode_jpeg(&jpg, true).unwrap();
        assert_eq!((img.width, img.height), (uw, uh), "orientation {o}");
        for (x, y) in [(0, 0), (uw - 1, 0), (0, uh - 1), (uw / 2, uh / 3)] {
            let (sx, sy) = src(x, y, w, h);
            let err = max_err(&img.pixel(x, y), &at(sx, sy));
            assert!(err <= 12, "orientation {o}: upright ({x},{y}) vs stored ({sx},{sy}): error {err}");
        }
    }
}

#[test]
fn real_sample_grayscale_and_rotated() {
    let Some(sample) = imagenet_sample("real_sample_grayscale_and_rotated") else { return };
    // Grayscale JPEG (1 component, 156 rows x 350 columns in its SOF0): RGB with equal channels.
    let gray = std::fs::read(sample.join("n02692877/n02692877_airship.JPEG")).unwrap();
    let img = decode_jpeg(&gray, true).unwrap();
    assert_eq!((img.width, img.height), (350, 156));
    assert!(img.data.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]));
    assert!(img.data.iter().any(|&v| v != img.data[0]), "decoded a constant image");
    // EXIF orientation 6: stored 392 wide x 294 high, upright 294 x 392.
    let rotated = std::fs::read(sample.join("n02951585/n02951585_can_opener.JPEG")).unwrap();
    let img = decode_jpeg(&rotated, true).unwrap();
    assert_eq!((img.width, img.height), (294, 392));
}

#[test]
fn damaged_jpegs_fail_cleanly() {
    let px = pattern(64, 64);
    let jpg = encode(&px, 64, 64, jpeg_encoder::ColorType::Rgb, false, None);
    assert!(is_jpeg(&jpg) && !is_jpeg(b"GIF89a"));
    for cut in [2, 20, jpg.len() / 3, jpg.len() / 2, jpg.len() - 2] {
        let msg = decode_jpeg(&jpg[..cut], true).expect_err(&format!("strict decode accepted a {cut}-byte prefix"));
        assert!(msg.contains("JPEG"), "{msg}");
        let _ = decode_jpeg(&jpg[..cut], false); // lenient: grey fill or error, never a panic
    }
    assert!(decode_jpeg(&[], true).is_err());
}

/// A real photo cut inside its scan data and closed again with an end-of-image marker (FF D9): the
/// marker check passes and zune-jpeg alone decodes the missing blocks as a flat band; the strict decode
/// must refuse it, while leaving complete files (baseline, progressive, with restart markers) unchanged.
#[test]
fn truncated_jpeg_closed_with_eoi_is_refused() {
    let Some(sample) = imagenet_sample("truncated_jpeg_closed_with_eoi_is_refused") else { return };
    let real = std::fs::read(sample.join("n01440764/n01440764_tench.JPEG")).unwrap();
    let full = decode_jpeg(&real, true).unwrap();
    let (w, h) = (full.width as u16, full.height as u16);
    let mut variants = vec![("real baseline", real.clone())];
    for (name, progressive, restart) in [("progressive", true, 0u16), ("restart markers", false, 2)] {
        let mut out = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut out, 90);
        enc.set_progressive(progressive);
        if restart > 0 {
            enc.set_restart_interval(restart);
        }
        enc.encode(&full.data, w, h, jpeg_encoder::ColorType::Rgb).unwrap();
        variants.push((name, out));
    }
    for (name, jpg) in variants {
        // Complete: the strict decode (which reads a padded copy) equals the plain lenient decode.
        assert_eq!(decode_jpeg(&jpg, true).unwrap(), decode_jpeg(&jpg, false).unwrap(), "{name}");
        let scan = jpg.windows(2).position(|m| m == [0xFF, 0xDA]).unwrap();
        for frac in [0.3, 0.55, 0.8, 0.97] {
            let cut = scan + 40 + ((jpg.len() - scan - 40) as f64 * frac) as usize;
            let mut closed = jpg[..cut].to_vec();
            closed.extend([0xFF, 0xD9]);
            // What used to pass: the lenient decode fills the rest in without an error.
            if let Ok(grey) = decode_jpeg(&closed, false) {
                assert_ne!(grey.data, full.data, "{name} cut at {cut}");
            }
            let msg = decode_jpeg(&closed, true).err();
            let msg = msg.unwrap_or_else(|| panic!("{name} cut at {cut} of {} bytes was accepted", jpg.len()));
            assert!(msg.contains("JPEG"), "{name} cut at {cut}: {msg}");
        }
    }
}
