//! Bicubic resize (`ResizeOps`): the CPU reference against values computed independently of this crate
//! (by hand and by OpenCV), and every CUDA target (SIMT emulator, GPU when present) against the CPU
//! reference on random inputs.
//!
//! Independent values. OpenCV's `INTER_CUBIC` on float32 images uses Keys' cubic with A = -0.75,
//! half-pixel centres and a replicate border, which is the PyTorch `interpolate(mode='bicubic',
//! align_corners=False)` definition we implement. That claim was checked on cases derived by hand (see
//! `hand_derived_values`: OpenCV gives exactly 1.3125, 6.1875 and 0.89453125, and the A = -0.5, reflect
//! border or align_corners variants would give 1.375, 1.21875 and 1.0). The expected values in
//! `OPENCV_CASES` were then printed by this script (opencv-python-headless 5.0.0, numpy 2.4.6), on the
//! input `pattern` below (same formula, same f32 rounding):
//!
//! ```text
//! import cv2, numpy as np
//! def image(h, w, c):
//!     hh, ww, cc = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
//!     return ((hh * 31 + ww * 17 + cc * 7) % 23).astype(np.float32) / np.float32(23) - np.float32(0.5)
//! for (h, w, c, ho, wo) in [(224, 224, 3, 192, 192), (224, 224, 3, 256, 256), (224, 224, 3, 288, 288),
//!                           (28, 28, 3, 32, 32), (9, 7, 2, 5, 11)]:
//!     y = cv2.resize(image(h, w, c), (wo, ho), interpolation=cv2.INTER_CUBIC).reshape(ho, wo, c)
//!     pts = [(0, 0), (0, wo-1), (ho-1, 0), (ho-1, wo-1), (0, wo//2), (ho//3, wo//2), (ho//2+1, 1)]
//!     print([(oy, ox, ch, str(y[oy, ox, ch])) for (oy, ox) in pts for ch in range(c)])  # shortest f32 repr
//! ```
//!
//! Over the whole outputs of these five cases (compared once from raw dumps) the reference and OpenCV
//! differed by at most 3.2e-7; the tests use 1e-6 absolute (OpenCV evaluates in f32, we in f64).

use attnas::backend::cpu::CpuBackend;
use attnas::backend::ops::resize::{ResizeOps, ResizeShape};
use attnas::backend::{upload_new, Backend, DeviceMemory};
use attnas::testing::{assert_close, random_vec};

/// The input of the OpenCV cases: ((h*31 + w*17 + c*7) mod 23) / 23 - 0.5, NHWC, n = 1.
fn pattern(h: usize, w: usize, c: usize) -> Vec<f32> {
    let mut x = Vec::with_capacity(h * w * c);
    for y in 0..h {
        for xx in 0..w {
            for ch in 0..c {
                x.push(((y * 31 + xx * 17 + ch * 7) % 23) as f32 / 23.0 - 0.5);
            }
        }
    }
    x
}

type Case = ((usize, usize, usize, usize, usize), &'static [(usize, usize, usize, f32)]);

/// ((h_in, w_in, c, h_out, w_out), [(oy, ox, ch, OpenCV value)]) from the script in the file header.
#[rustfmt::skip]
const OPENCV_CASES: &[Case] = &[
    ((224, 224, 3, 192, 192), &[(0, 0, 0, -0.43202358), (0, 0, 1, -0.19020481), (0, 0, 2, 0.1189401), (0, 191, 0, 0.23390311), (0, 191, 1, -0.33076712), (0, 191, 2, -0.027178751), (191, 0, 0, 0.027178746), (191, 0, 1, 0.3311118), (191, 0, 2, -0.23390308), (191, 191, 0, -0.11894011), (191, 191, 1, 0.19465725), (191, 191, 2, -0.43768382), (0, 96, 0, 0.26080355), (0, 96, 1, -0.35901803), (0, 96, 2, -0.11315707), (64, 96, 0, 0.37840787), (64, 96, 1, -0.15965998), (64, 96, 2, -0.18413514), (97, 1, 0, -0.349957), (97, 1, 1, -0.15396185), (97, 1, 2, 0.015666157)]),
    ((224, 224, 3, 256, 256), &[(0, 0, 0, -0.54647857), (0, 0, 1, -0.1992347), (0, 0, 2, 0.10511313), (0, 255, 0, 0.38510424), (0, 255, 1, -0.3946427), (0, 255, 2, -0.09199223), (255, 0, 0, 0.0919922), (255, 0, 1, 0.39464268), (255, 0, 2, -0.38510424), (255, 255, 0, -0.10511316), (255, 255, 1, 0.1992347), (255, 255, 2, -0.53761625), (0, 128, 0, 0.28243697), (0, 128, 1, -0.44727787), (0, 128, 2, -0.09798711), (85, 128, 0, 0.20965147), (85, 128, 1, 0.12420427), (85, 128, 2, -0.35941622), (129, 1, 0, -0.3939369), (129, 1, 1, -0.20563817), (129, 1, 2, 0.22085482)]),
    ((224, 224, 3, 288, 288), &[(0, 0, 0, -0.57590455), (0, 0, 1, -0.20137772), (0, 0, 2, 0.10297008), (0, 287, 0, 0.42203087), (0, 287, 1, -0.40964398), (0, 287, 2, -0.10963154), (287, 0, 0, 0.10963151), (287, 0, 1, 0.40964392), (287, 0, 2, -0.42203087), (287, 287, 0, -0.102970116), (287, 287, 1, 0.2013777), (287, 287, 2, -0.5601181), (0, 144, 0, 0.27093253), (0, 144, 1, -0.4671194), (0, 144, 2, -0.0865411), (96, 144, 0, 0.3074175), (96, 144, 1, -0.10196772), (96, 144, 2, -0.23613511), (145, 1, 0, -0.24789776), (145, 1, 1, -0.26659507), (145, 1, 2, 0.21985152)]),
    ((28, 28, 3, 32, 32), &[(0, 0, 0, -0.54647857), (0, 0, 1, -0.1992347), (0, 0, 2, 0.10511313), (0, 31, 0, 0.51553905), (0, 31, 1, -0.26420793), (0, 31, 2, 0.038442552), (31, 0, 0, -0.081920825), (31, 0, 1, 0.22072968), (31, 0, 2, -0.55901736), (31, 31, 0, -0.1485914), (31, 31, 1, 0.15575644), (31, 31, 2, 0.5030003), (0, 16, 0, -0.14362536), (0, 16, 1, 0.20659143), (0, 16, 2, 0.45465267), (10, 16, 0, -0.1756746), (10, 16, 1, 0.25964913), (10, 16, 2, -0.2711453), (17, 1, 0, 0.38240433), (17, 1, 1, -0.12059296), (17, 1, 2, 0.030456707)]),
    ((9, 7, 2, 5, 11), &[(0, 0, 0, -0.42213976), (0, 0, 1, 0.016646726), (0, 10, 0, 0.13487321), (0, 10, 1, -0.006903658), (4, 0, 0, 0.20308146), (4, 0, 1, -0.1670092), (4, 10, 0, 0.013655931), (4, 10, 1, -0.1905599), (0, 5, 0, -0.17269564), (0, 5, 1, 0.20365213), (1, 5, 0, 0.3233043), (1, 5, 1, -0.29234782), (3, 1, 0, 0.004778441), (3, 1, 1, -0.30199322)]),
];

/// Tolerance against OpenCV: it evaluates weights and sums in f32 (measured max difference 3.2e-7).
const OPENCV_ABS: f32 = 1e-6;

fn resize<B: ResizeOps>(b: &B, s: &ResizeShape, x: &[f32]) -> Vec<f32> {
    let xm = upload_new(b, x).unwrap();
    let ym = b.alloc(s.output_len()).unwrap();
    b.bicubic_resize_fwd(s, xm.tensor(), ym.tensor()).unwrap();
    b.download(ym.tensor()).unwrap()
}

/// Checks one OpenCV case on a backend; the image sits at batch index 1 of 2 (image 0 is random), so
/// the per-image offsets are exercised too.
fn check_opencv_case<B: ResizeOps>(b: &B, case: &Case) {
    let &((h, w, c, ho, wo), points) = case;
    let s = ResizeShape { n: 2, c, h_in: h, w_in: w, h_out: ho, w_out: wo };
    let mut x = random_vec(5, h * w * c, -1.0, 1.0);
    x.extend(pattern(h, w, c));
    let y = resize(b, &s, &x);
    let img = &y[ho * wo * c..];
    let got: Vec<f32> = points.iter().map(|&(oy, ox, ch, _)| img[(oy * wo + ox) * c + ch]).collect();
    let want: Vec<f32> = points.iter().map(|p| p.3).collect();
    assert_close(&format!("{} {h}x{w} -> {ho}x{wo} vs OpenCV", b.name()), &got, &want, OPENCV_ABS, 0.0);
}

#[test]
fn reference_matches_opencv() {
    for case in OPENCV_CASES {
        check_opencv_case(&CpuBackend::new(), case);
    }
}

/// Derived by hand with A = -0.75, W(0.5) = 0.59375, W(1.5) = -0.09375:
/// - [1, 2, 4, 8] -> 2 wide: s = 0.5 and 2.5; taps (-1 -> 0, 0, 1, 2) and (1, 2, 3, 4 -> 3):
///   0.5*1 + 0.59375*2 - 0.09375*4 = 1.3125;  -0.09375*2 + 0.59375*4 + (0.59375 - 0.09375)*8 = 6.1875.
/// - [1, 2] -> 4 wide: s = -0.25 (not clamped), floor -1, t = 0.75: taps (0, 0, 0, 1), so
///   1 + W(1.25) = 1 - 0.10546875 = 0.89453125.
/// - A 1x1 image resized to 3x2 is constant (all taps clamp to the one pixel, weights sum to 1).
fn check_hand_derived<B: ResizeOps>(b: &B) {
    let row = |w_in, w_out| ResizeShape { n: 1, c: 1, h_in: 1, w_in, h_out: 1, w_out };
    assert_eq!(resize(b, &row(4, 2), &[1.0, 2.0, 4.0, 8.0]), [1.3125, 6.1875], "{}", b.name());
    assert_eq!(resize(b, &row(2, 4), &[1.0, 2.0])[0], 0.894_531_25, "{}", b.name());
    // the same row as a column: the y axis uses the same taps
    let col = ResizeShape { n: 1, c: 1, h_in: 4, w_in: 1, h_out: 2, w_out: 1 };
    assert_eq!(resize(b, &col, &[1.0, 2.0, 4.0, 8.0]), [1.3125, 6.1875], "{}", b.name());
    let dot = ResizeShape { n: 1, c: 2, h_in: 1, w_in: 1, h_out: 3, w_out: 2 };
    let y = resize(b, &dot, &[0.75, -2.0]);
    assert_close(&format!("{} 1x1 -> 3x2", b.name()), &y, &[0.75, -2.0].repeat(6), 1e-6, 0.0);
}

#[test]
fn hand_derived_values() {
    check_hand_derived(&CpuBackend::new());
}

#[test]
fn rejects_bad_shapes() {
    let b = CpuBackend::new();
    let s = ResizeShape { n: 1, c: 3, h_in: 4, w_in: 4, h_out: 2, w_out: 2 };
    let x = b.alloc(s.input_len()).unwrap();
    let y = b.alloc(s.output_len() + 1).unwrap();
    let err = b.bicubic_resize_fwd(&s, x.tensor(), y.tensor()).unwrap_err().to_string();
    assert!(err.contains("y (n, h_out, w_out, c)"), "{err}");
    let empty = ResizeShape { h_in: 0, ..s };
    let err = b.bicubic_resize_fwd(&empty, x.tensor(), y.tensor()).unwrap_err().to_string();
    assert!(err.contains("h_in"), "{err}");
}

/// Kernel vs reference on random inputs. Tolerance abs 2e-6 + rel 1e-6: the kernel forms the weights and
/// the 16-term sum in f32 (each weight within a few ulp, sum of |w| products <= ~1.6 for |x| <= 1), the
/// reference in f64; the tap indices and fractions are exact integers on both sides, so there is no
/// coordinate error to absorb.
const KERNEL_ABS: f32 = 2e-6;
const KERNEL_REL: f32 = 1e-6;

/// Shapes: up and down, non-square, rows wider than one 128-thread block (w_out * c = 11 * 13 = 143),
/// c = 1 and odd c, identity on one axis, and 28 -> 32 from the task.
const RANDOM_SHAPES: &[(usize, usize, usize, usize, usize, usize)] = &[
    // (n, c, h_in, w_in, h_out, w_out)
    (2, 3, 9, 9, 7, 7),
    (2, 3, 7, 7, 9, 9),
    (1, 13, 6, 5, 4, 11),
    (3, 1, 5, 8, 5, 3),
    (1, 3, 28, 28, 32, 32),
    (2, 2, 16, 12, 6, 20),
];

#[test]
fn kernel_matches_reference() {
    attnas::on_cuda_targets!("resize kernel_matches_reference", |b| {
        for (i, &(n, c, h_in, w_in, h_out, w_out)) in RANDOM_SHAPES.iter().enumerate() {
            let s = ResizeShape { n, c, h_in, w_in, h_out, w_out };
            let x = random_vec(100 + i as u64, s.input_len(), -1.0, 1.0);
            let want = resize(&CpuBackend::new(), &s, &x);
            let got = resize(&b, &s, &x);
            assert_close(&format!("{} {s:?}", b.name()), &got, &want, KERNEL_ABS, KERNEL_REL);
        }
        // n * h_out = 70,000 rows > the 65,535 cap on grid.y: the kernel's row grid-stride loop runs twice
        let tall = ResizeShape { n: 2, c: 1, h_in: 5, w_in: 2, h_out: 35_000, w_out: 1 };
        let x = random_vec(99, tall.input_len(), -1.0, 1.0);
        let want = resize(&CpuBackend::new(), &tall, &x);
        assert_close(&format!("{} {tall:?}", b.name()), &resize(&b, &tall, &x), &want, KERNEL_ABS, KERNEL_REL);
        check_hand_derived(&b);
        // the two small OpenCV cases run emulated in well under a second
        for case in &OPENCV_CASES[3..] {
            check_opencv_case(&b, case);
        }
    });
}

/// The real input shapes (224 -> 192 and 288, batch 4) only where a GPU is present: they are too large for
/// the emulator's test budget, and the shapes above already take every branch of the kernel.
#[test]
fn gpu_full_size_matches_reference() {
    let Some(b) = attnas::testing::gpu_or_skip("resize gpu_full_size_matches_reference") else { return };
    for out in [192, 288] {
        let s = ResizeShape { n: 4, c: 3, h_in: 224, w_in: 224, h_out: out, w_out: out };
        let x = random_vec(out as u64, s.input_len(), -2.5, 2.5);
        let want = resize(&CpuBackend::new(), &s, &x);
        assert_close(&format!("{} {s:?}", b.name()), &resize(&b, &s, &x), &want, 2.0 * KERNEL_ABS, KERNEL_REL);
    }
    for case in &OPENCV_CASES[..3] {
        check_opencv_case(&b, case);
    }
}
