//! Reference SGD step (the spec of `kernels/optimizer.cu`; spec 3.1), per element, in the order PyTorch
//! applies it (`clip_grad_value_`, then `SGD(momentum, nesterov=True, weight_decay)`):
//!
//! ```text
//! g = clip(grad, -c, c)        element-wise value clip, first
//! g = g + wd * p               coupled weight decay (L2 in the gradient), per parameter group
//! v = mu * v + g               momentum buffer (zero-initialised: PyTorch's first-step copy is the same)
//! p = p - lr * (g + mu * v)    Nesterov
//! ```
//!
//! Evaluated in f64 from the f32 state and rounded once per stored value. The clip keeps a NaN
//! gradient NaN (as `torch.clamp` does) rather than turning it into +-c, so a diverged step is visible.

/// The scalars of one step shared by every parameter group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SgdStep {
    /// Learning rate of this iteration (from the schedule).
    pub lr: f32,
    /// Momentum coefficient mu (0.9 in the recipe).
    pub momentum: f32,
    /// Element-wise gradient clip c (1.0 in the recipe); `f32::INFINITY` disables it.
    pub clip: f32,
}

/// clip(g, -c, c), keeping NaN.
pub fn clip_value(g: f64, c: f64) -> f64 {
    if g > c {
        c
    } else if g < -c {
        -c
    } else {
        g
    }
}

/// One step over a group: `params` and `momentum` updated in place from `grads` (read only).
pub fn sgd_nesterov_step(step: &SgdStep, weight_decay: f32, params: &mut [f32], momentum: &mut [f32], grads: &[f32]) {
    let (lr, mu, wd, c) = (step.lr as f64, step.momentum as f64, weight_decay as f64, step.clip as f64);
    for ((p, v), &g) in params.iter_mut().zip(momentum.iter_mut()).zip(grads) {
        let g = clip_value(g as f64, c) + wd * *p as f64;
        let v_new = mu * *v as f64 + g;
        *v = v_new as f32;
        *p = (*p as f64 - lr * (g + mu * v_new)) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two steps by hand (lr 0.1, mu 0.9, wd 0.01, clip 1): p = 1, grads 3 then -0.5.
    /// Step 1: g = 1 (clipped) + 0.01 = 1.01; v = 1.01; p = 1 - 0.1 (1.01 + 0.909) = 0.8081.
    /// Step 2: g = -0.5 + 0.008081 = -0.491919; v = 0.909 - 0.491919 = 0.417081;
    ///         p = 0.8081 - 0.1 (-0.491919 + 0.3753729) = 0.81975461.
    #[test]
    fn two_steps_by_hand() {
        let step = SgdStep { lr: 0.1, momentum: 0.9, clip: 1.0 };
        let (mut p, mut v) = ([1.0f32], [0.0f32]);
        sgd_nesterov_step(&step, 0.01, &mut p, &mut v, &[3.0]);
        assert!((p[0] - 0.8081).abs() < 1e-7 && (v[0] - 1.01).abs() < 1e-7, "{p:?} {v:?}");
        sgd_nesterov_step(&step, 0.01, &mut p, &mut v, &[-0.5]);
        assert!((v[0] - 0.417_081).abs() < 1e-6, "{v:?}");
        assert!((p[0] - 0.819_754_6).abs() < 1e-6, "{p:?}");
    }

    #[test]
    fn clip_bounds_and_nan() {
        assert_eq!(clip_value(2.5, 1.0), 1.0);
        assert_eq!(clip_value(-2.5, 1.0), -1.0);
        assert_eq!(clip_value(0.25, 1.0), 0.25);
        assert_eq!(clip_value(1e30, f64::INFINITY), 1e30);
        assert!(clip_value(f64::NAN, 1.0).is_nan());
    }
}
