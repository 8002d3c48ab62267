//! Reference activations (the spec of `kernels/activation.cu`). f32 in and out; the sigmoid is
//! evaluated in f64 so the reference is the more accurate side of every differential test.

fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-(x as f64)).exp())
}

/// y = x * sigmoid(x)
pub fn swish_fwd(x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = (xi as f64 * sigmoid(xi)) as f32;
    }
}

/// d/dx [x s(x)] = s + x s (1 - s), times the upstream gradient.
pub fn swish_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((g, &xi), &gy) in dx.iter_mut().zip(x).zip(dy) {
        let s = sigmoid(xi);
        *g = (gy as f64 * (s * (1.0 + xi as f64 * (1.0 - s)))) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The analytic backward equals a central finite difference of the forward (f64 differences of
    /// f32 evaluations: step 1e-3, tolerance 1e-3 absolute, well above the O(h^2) truncation error).
    #[test]
    fn swish_backward_matches_finite_difference() {
        let xs: Vec<f32> = (-40..=40).map(|i| i as f32 * 0.2).collect();
        let ones = vec![1.0f32; xs.len()];
        let mut dx = vec![0.0f32; xs.len()];
        swish_bwd(&xs, &ones, &mut dx);
        let h = 1e-3f64;
        for (i, &x) in xs.iter().enumerate() {
            let f = |v: f64| v / (1.0 + (-v).exp());
            let fd = (f(x as f64 + h) - f(x as f64 - h)) / (2.0 * h);
            assert!((fd - dx[i] as f64).abs() < 1e-3, "x={x} fd={fd} analytic={}", dx[i]);
        }
    }

    #[test]
    fn swish_forward_known_values() {
        let mut y = [0.0f32; 3];
        swish_fwd(&[0.0, 1.0, -1.0], &mut y);
        assert_eq!(y[0], 0.0);
        assert!((y[1] - 0.731_058_6).abs() < 1e-6);
        assert!((y[2] + 0.268_941_4).abs() < 1e-6);
    }
}
