//! AutoAugment v0: each op on a tiny image against pixel values worked out by hand from the PIL
//! definitions (see the comments), the policy table against spec 3.5, and determinism per seed.

use attnas::data::autoaugment::{self, apply_op, level_to_arg, Op, Resample, FILL, POLICY_V0};
use attnas::data::rng::sample_rng;

/// An image whose three channels all hold `vals` (one pixel per value, in a single row).
fn grey_row(vals: &[u8]) -> Vec<u8> {
    vals.iter().flat_map(|&v| [v, v, v]).collect()
}

fn channel0(img: &[u8]) -> Vec<u8> {
    img.chunks_exact(3).map(|p| p[0]).collect()
}

fn run(op: Op, arg: f64, vals: &[u8]) -> Vec<u8> {
    let mut img = grey_row(vals);
    apply_op(&mut img, vals.len() as u32, 1, op, arg, Resample::Nearest);
    channel0(&img)
}

#[test]
fn point_ops_match_pil() {
    assert_eq!(run(Op::Invert, 0.0, &[0, 1, 128, 255]), [255, 254, 127, 0]);
    // solarize(128): values >= 128 are inverted.
    assert_eq!(run(Op::Solarize, 128.0, &[0, 127, 128, 255]), [0, 127, 127, 0]);
    assert_eq!(run(Op::Solarize, 256.0, &[0, 255]), [0, 255]);
    // solarize_add(33): below 128 add 33; 200 overflows to 255 below the threshold only.
    assert_eq!(run(Op::SolarizeAdd, 33.0, &[0, 100, 127, 128, 250]), [33, 133, 160, 128, 250]);
    assert_eq!(run(Op::SolarizeAdd, 200.0, &[100]), [255]);
    // posterize keeps the top bits: 183 = 1011_0111.
    assert_eq!(run(Op::Posterize, 4.0, &[183, 15, 255]), [0b1011_0000, 0, 0b1111_0000]);
    assert_eq!(run(Op::Posterize, 6.0, &[183]), [0b1011_0100]);
    assert_eq!(run(Op::Posterize, 8.0, &[183]), [183]);
    // autocontrast: lo 50, hi 150 -> scale 2.55, offset -127.5; int() truncates 127.5.
    assert_eq!(run(Op::AutoContrast, 0.0, &[50, 100, 150]), [0, 127, 255]);
    assert_eq!(run(Op::AutoContrast, 0.0, &[77, 77]), [77, 77]);
}

#[test]
fn autocontrast_is_per_channel() {
    // Channel 1 spans 0..100: scale 255 / 100 = 2.55 and 100 * 2.55 = 254.99999999999997 in doubles,
    // which PIL's int() (and ours) truncates to 254.
    let mut img = vec![10, 0, 5, 20, 100, 5];
    apply_op(&mut img, 2, 1, Op::AutoContrast, 0.0, Resample::Nearest);
    assert_eq!(img, [0, 0, 5, 255, 254, 5]);
}

#[test]
fn equalize_matches_pil() {
    // 1024 pixels, 256 each of 0, 64, 128, 255: step = (1024 - 256) // 255 = 3, n starts at 1;
    // lut[0] = 1//3 = 0, lut[64] = 257//3 = 85, lut[128] = 513//3 = 171, lut[255] = 769//3 = 256 -> 255.
    let vals: Vec<u8> = [0u8, 64, 128, 255].iter().flat_map(|&v| std::iter::repeat_n(v, 256)).collect();
    let out = run(Op::Equalize, 0.0, &vals);
    for (i, want) in [0u8, 85, 171, 255].iter().enumerate() {
        assert!(out[i * 256..(i + 1) * 256].iter().all(|v| v == want), "value group {i}");
    }
    // Too few pixels for a step: identity.
    assert_eq!(run(Op::Equalize, 0.0, &[10, 10, 20, 30]), [10, 10, 20, 30]);
}

#[test]
fn enhance_ops_match_pil() {
    // grey of (200, 100, 50) = (200*19595 + 100*38470 + 50*7471 + 32768) >> 16 = 124.
    let color = |f: f64| {
        let mut img = vec![200, 100, 50];
        apply_op(&mut img, 1, 1, Op::Color, f, Resample::Nearest);
        img
    };
    assert_eq!(color(0.0), [124, 124, 124]);
    assert_eq!(color(1.0), [200, 100, 50]);
    assert_eq!(color(0.5), [162, 112, 87]); // 124 + .5 * (200 - 124) = 162, 112, 87
    assert_eq!(color(1.9), [255, 78, 0]); // 268.4 -> 255, 78.4 -> 78, -16.6 -> 0
                                          // contrast: mean grey of (124, 0) = 62; factor 0 gives the mean everywhere, 2 doubles the distance.
    let mut img = vec![200, 100, 50, 0, 0, 0];
    apply_op(&mut img, 2, 1, Op::Contrast, 0.0, Resample::Nearest);
    assert_eq!(img, [62; 6]);
    let mut img = vec![200, 100, 50, 0, 0, 0];
    apply_op(&mut img, 2, 1, Op::Contrast, 2.0, Resample::Nearest);
    assert_eq!(img, [255, 138, 38, 0, 0, 0]); // 62 + 2 * (100 - 62) = 138, 62 + 2 * (50 - 62) = 38
    assert_eq!(run(Op::Brightness, 0.5, &[200, 101, 1]), [100, 50, 0]);
}

/// A 3x3 image whose pixel (x, y) has all channels = 10 * (3y + x + 1).
fn grid3() -> Vec<u8> {
    (0..9u8).flat_map(|i| [10 * (i + 1); 3]).collect()
}

fn geo(op: Op, arg: f64, resample: Resample, img: &[u8], w: u32, h: u32) -> Vec<[u8; 3]> {
    let mut img = img.to_vec();
    apply_op(&mut img, w, h, op, arg, resample);
    img.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect()
}

const F: [u8; 3] = FILL;

#[test]
fn rotate_matches_pil() {
    let v = |x: u8| [x; 3];
    for r in [Resample::Nearest, Resample::Bilinear, Resample::Bicubic] {
        assert_eq!(geo(Op::Rotate, 0.0, r, &grid3(), 3, 3), grid3().chunks(3).map(|p| [p[0]; 3]).collect::<Vec<_>>());
    }
    // +90 degrees turns counter-clockwise: the top row becomes the left column, right pixel on top.
    let want90 = [v(30), v(60), v(90), v(20), v(50), v(80), v(10), v(40), v(70)];
    assert_eq!(geo(Op::Rotate, 90.0, Resample::Nearest, &grid3(), 3, 3), want90);
    let want_m90 = [v(70), v(40), v(10), v(80), v(50), v(20), v(90), v(60), v(30)];
    assert_eq!(geo(Op::Rotate, -90.0, Resample::Nearest, &grid3(), 3, 3), want_m90);
    // 45 degrees counter-clockwise on 3x3: each corner shows the edge middle before it (top-left <- top
    // middle: source (1.5, 0.09)), the centre stays.
    let r45 = geo(Op::Rotate, 45.0, Resample::Nearest, &grid3(), 3, 3);
    assert_eq!([r45[0], r45[2], r45[6], r45[8], r45[4]], [v(20), v(60), v(40), v(80), v(50)]);
    // On 4x4 the corners' sources lie outside (top-left samples y = 2 - 1.5 * 1.414 < 0): fill.
    let img4: Vec<u8> = (0..16u8).flat_map(|i| [i; 3]).collect();
    let r45 = geo(Op::Rotate, 45.0, Resample::Bilinear, &img4, 4, 4);
    assert_eq!([r45[0], r45[3], r45[12], r45[15]], [F, F, F, F]);
}

#[test]
fn translate_matches_pil() {
    let v = |x: u8| [x; 3];
    // arg is a fraction of the height: 1/3 of 3 rows = 1 row up (source y = y + 1); last row filled.
    for r in [Resample::Nearest, Resample::Bilinear, Resample::Bicubic] {
        let up = geo(Op::TranslateYRel, 1.0 / 3.0, r, &grid3(), 3, 3);
        assert_eq!(up, [v(40), v(50), v(60), v(70), v(80), v(90), F, F, F], "{r:?}");
        let down = geo(Op::TranslateYRel, -1.0 / 3.0, r, &grid3(), 3, 3);
        assert_eq!(down, [F, F, F, v(10), v(20), v(30), v(40), v(50), v(60)], "{r:?}");
    }
    // Half a row (1 x 4 column 10, 20, 30, 40): bilinear averages rows y and y+1 (truncating),
    // the last row samples y = 4.0, outside -> fill.
    let col: Vec<u8> = [10u8, 20, 35, 40].iter().flat_map(|&x| [x; 3]).collect();
    let half = geo(Op::TranslateYRel, 0.125, Resample::Bilinear, &col, 1, 4);
    assert_eq!(half, [v(15), v(27), v(37), F]);
    // Bicubic (PIL's a = -1) reproduces a linear ramp exactly between interior samples: 25 between 20, 30.
    let ramp: Vec<u8> = [10u8, 20, 30, 40, 50].iter().flat_map(|&x| [x; 3]).collect();
    let half = geo(Op::TranslateYRel, 0.1, Resample::Bicubic, &ramp, 1, 5);
    assert_eq!(half[1], v(25));
    assert_eq!(half[2], v(35));
    // Nearest with half a row: floor(y + 1.0) = y + 1 from pixel centres.
    let half = geo(Op::TranslateYRel, 0.125, Resample::Nearest, &col, 1, 4);
    assert_eq!(half, [v(20), v(35), v(40), F]);
}

#[test]
fn shear_matches_pil() {
    let v = |x: u8| [x; 3];
    // ShearX 0.25 on 3x3, nearest: source x = x + .5 + .25 (y + .5): row 0 +0.625, row 1 +0.875,
    // row 2 +1.125 -> rows 0 and 1 unchanged, row 2 shifted left by one with the fill on the right.
    let s = geo(Op::ShearX, 0.25, Resample::Nearest, &grid3(), 3, 3);
    assert_eq!(s, [v(10), v(20), v(30), v(40), v(50), v(60), v(80), v(90), F]);
    // Negative: source x = x + .5 - .25 (y + .5): row 0 +0.375, row 1 +0.125, row 2 -0.125 -> row 2
    // shifted right by one (its first pixel samples x = -0.125 < 0: fill).
    let s = geo(Op::ShearX, -0.25, Resample::Nearest, &grid3(), 3, 3);
    assert_eq!(s, [v(10), v(20), v(30), v(40), v(50), v(60), F, v(70), v(80)]);
    // ShearY is the transpose: column 2 moves up by one.
    let s = geo(Op::ShearY, 0.25, Resample::Nearest, &grid3(), 3, 3);
    assert_eq!(s, [v(10), v(20), v(60), v(40), v(50), v(90), v(70), v(80), F]);
}

#[test]
fn levels_and_policy_match_spec() {
    assert_eq!(level_to_arg(Op::Rotate, 10.0), 30.0);
    assert!((level_to_arg(Op::ShearX, 5.0) - 0.15).abs() < 1e-12);
    assert!((level_to_arg(Op::TranslateYRel, 10.0) - 0.45).abs() < 1e-12);
    assert!((level_to_arg(Op::Color, 0.0) - 0.1).abs() < 1e-12 && (level_to_arg(Op::Color, 10.0) - 1.9).abs() < 1e-12);
    assert_eq!(level_to_arg(Op::Solarize, 3.0), 76.0); // int(256 * .3) = int(76.8)
    assert_eq!(level_to_arg(Op::SolarizeAdd, 7.0), 77.0); // int(110 * .7)
    assert_eq!(level_to_arg(Op::Posterize, 6.0), 6.0); // int(4 * .6) + 4
    assert_eq!(level_to_arg(Op::Posterize, 10.0), 8.0);
    assert_eq!(POLICY_V0.len(), 25);
    let first = POLICY_V0[0];
    assert_eq!((first[0].op, first[0].prob, first[0].magnitude), (Op::Equalize, 0.8, 1.0));
    assert_eq!((first[1].op, first[1].prob, first[1].magnitude), (Op::ShearY, 0.8, 4.0));
    let last = POLICY_V0[24];
    assert_eq!((last[0].op, last[1].op, last[1].prob, last[1].magnitude), (Op::Color, Op::Rotate, 0.4, 5.0));
    let count = |op| POLICY_V0.iter().flatten().filter(|p| p.op == op).count();
    // Counts of each op in the spec's list of 25 pairs.
    assert_eq!(
        [count(Op::Equalize), count(Op::Color), count(Op::Rotate), count(Op::Solarize), count(Op::ShearY)],
        [12, 9, 7, 8, 4]
    );
    assert!(POLICY_V0.iter().flatten().all(|p| (0.0..=1.0).contains(&p.prob) && (0.0..=10.0).contains(&p.magnitude)));
}

#[test]
fn policy_is_deterministic_per_seed_and_changes_images() {
    let (w, h) = (24u32, 20u32);
    let base: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
    let mut changed = 0;
    for idx in 0..50u64 {
        let mut a = base.clone();
        let mut b = base.clone();
        autoaugment::apply_v0(&mut a, w, h, &mut sample_rng(1, 0, idx));
        autoaugment::apply_v0(&mut b, w, h, &mut sample_rng(1, 0, idx));
        assert_eq!(a, b, "sample {idx}");
        changed += (a != base) as usize;
    }
    // Most sub-policies fire at least one op with p >= .4; an unchanged image in most draws means no-ops.
    assert!(changed >= 30, "only {changed} of 50 draws changed the image");
}
