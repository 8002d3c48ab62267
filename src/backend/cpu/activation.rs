//! Reference activations (the spec of `kernels/activation.cu`). f32 in and out; the sigmoid is
//! evaluated in f64 so the reference is the more accurate side of every differential test.
//! ReLU and hard-sigmoid (used only inside squeeze-and-excite, spec 1.2 step 3) follow PyTorch's
//! derivative conventions at the kinks: relu'(0) = 0, hsigmoid'(x) = 1/6 only for -3 < x < 3.

fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-(x as f64)).exp())
}

/// y = x * sigmoid(x)
pub fn swish_fwd(x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = swish(xi);
    }
}

/// x * sigmoid(x) in f64, rounded once (scalar form shared with the bias + activation reference).
pub fn swish(x: f32) -> f32 {
    (x as f64 * sigmoid(x)) as f32
}

/// d/dx [x s(x)] = s (1 + x (1 - s)).
pub fn swish_grad(x: f32) -> f32 {
    let s = sigmoid(x);
    (s * (1.0 + x as f64 * (1.0 - s))) as f32
}

/// d/dx [x s(x)] = s + x s (1 - s), times the upstream gradient.
pub fn swish_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((g, &xi), &gy) in dx.iter_mut().zip(x).zip(dy) {
        let s = sigmoid(xi);
        *g = (gy as f64 * (s * (1.0 + xi as f64 * (1.0 - s)))) as f32;
    }
}

/// y = max(x, 0)
pub fn relu_fwd(x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = relu(xi);
    }
}

/// dx = dy where x > 0, else 0.
pub fn relu_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((g, &xi), &gy) in dx.iter_mut().zip(x).zip(dy) {
        *g = gy * relu_grad(xi);
    }
}

/// y = relu6(x + 3) / 6
pub fn hard_sigmoid_fwd(x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = hard_sigmoid(xi);
    }
}

/// dx = dy / 6 where -3 < x < 3, else 0.
pub fn hard_sigmoid_bwd(x: &[f32], dy: &[f32], dx: &mut [f32]) {
    for ((g, &xi), &gy) in dx.iter_mut().zip(x).zip(dy) {
        *g = gy * hard_sigmoid_grad(xi);
    }
}

/// max(x, 0), scalar form shared with the bias + activation references.
pub fn relu(x: f32) -> f32 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

pub fn relu_grad(x: f32) -> f32 {
    if x > 0.0 {
        1.0
    } else {
        0.0
    }
}

/// relu6(x + 3) / 6 computed as min(max(x + 3, 0), 6) / 6 in f32, the order the kernel uses, so the
/// two sides agree to the last bit.
pub fn hard_sigmoid(x: f32) -> f32 {
    (x + 3.0).clamp(0.0, 6.0) / 6.0
}

pub fn hard_sigmoid_grad(x: f32) -> f32 {
    if x > -3.0 && x < 3.0 {
        1.0 / 6.0
    } else {
        0.0
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

    /// ReLU and hard-sigmoid backward against central differences away from the kinks (step 1e-3,
    /// points at least 0.05 from 0 and +-3, so the difference never straddles a kink; both are
    /// piecewise linear, so the only error is f32 rounding of x +- h: tolerance 1e-3).
    #[test]
    fn relu_and_hard_sigmoid_backward_match_finite_difference() {
        let xs: Vec<f32> = (-50..=50).map(|i| i as f32 * 0.1 + 0.05).collect();
        let ones = vec![1.0f32; xs.len()];
        let h = 1e-3f32;
        type Fwd = fn(f32) -> f32;
        type Bwd = fn(&[f32], &[f32], &mut [f32]);
        for (name, f, bwd) in [("relu", relu as Fwd, relu_bwd as Bwd), ("hsig", hard_sigmoid, hard_sigmoid_bwd)] {
            let mut dx = vec![0.0f32; xs.len()];
            bwd(&xs, &ones, &mut dx);
            for (i, &x) in xs.iter().enumerate() {
                let fd = (f(x + h) as f64 - f(x - h) as f64) / (2.0 * h as f64);
                assert!((fd - dx[i] as f64).abs() < 1e-3, "{name} x={x} fd={fd} analytic={}", dx[i]);
            }
        }
    }

    #[test]
    fn hard_sigmoid_known_values() {
        let mut y = [0.0f32; 5];
        hard_sigmoid_fwd(&[-4.0, -3.0, 0.0, 1.5, 3.5], &mut y);
        assert_eq!(y, [0.0, 0.0, 0.5, 0.75, 1.0]);
        let mut g = [0.0f32; 4];
        hard_sigmoid_bwd(&[-3.0, 3.0, 0.0, 2.9], &[6.0; 4], &mut g);
        assert_eq!(g, [0.0, 0.0, 1.0, 1.0]);
    }
}
