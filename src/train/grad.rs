//! The gradient of one training-mode forward, for checking attnas against another framework
//! (`attnas grad`): subnet `arch` on a given batch, BN on batch statistics, no dropout or drop-connect,
//! label-smoothed CE averaged over the batch (spec 3.2, AttentiveNAS's `CrossEntropyLossSmooth`), one
//! backward from zeroed gradients. The result is the loss and the gradient of every supernet parameter
//! under AttentiveNAS's state-dict names and PyTorch shapes, zeros outside the subnet's active slices:
//! what `loss.backward()` leaves in `p.grad` for each parameter of the original's dynamic model (with
//! `None` there read as zeros) after `set_active_subnet(arch)` and `model.train()`.
//!
//! Inputs are the images the subnet's stem sees: `[n, 3, r, r]` NCHW at the subnet's resolution r,
//! normalised (what `attnas eval --dump-inputs` writes), so no resize happens inside.

use crate::backend::ops::loss::LossShape;
use crate::backend::{upload_new, Arena, DeviceMemory, SupernetOps};
use crate::error::{Error, Result};
use crate::nn::{arch_activation_arena_len, ForwardOptions, NamedTensor, Supernet};
use crate::space::Arch;

/// The loss and the named parameter gradients of one forward + backward.
#[derive(Clone, Debug, PartialEq)]
pub struct SubnetGradients {
    /// Mean label-smoothed CE over the batch.
    pub loss: f32,
    /// One tensor per supernet parameter, in the parameter table's order, PyTorch layout.
    pub grads: Vec<NamedTensor>,
}

/// NCHW `[n, 3, side, side]` to NHWC.
pub fn nchw_to_nhwc(x: &[f32], n: usize, c: usize, side: usize) -> Vec<f32> {
    let hw = side * side;
    let mut out = vec![0f32; x.len()];
    for i in 0..n {
        for ch in 0..c {
            for p in 0..hw {
                out[(i * hw + p) * c + ch] = x[(i * c + ch) * hw + p];
            }
        }
    }
    out
}

/// Runs `arch` on `images` (`[n, 3, r, r]` NCHW, r = `arch.resolution`, normalised) with `labels`
/// (`[n]` class indices) and returns the batch-mean label-smoothed CE (`label_smoothing` in [0, 1]) and
/// every parameter's gradient. The supernet's gradient arena is overwritten; its parameters are not.
pub fn subnet_gradients<B: SupernetOps>(
    b: &B,
    net: &Supernet<B::Memory>,
    arch: &Arch,
    images_nchw: &[f32],
    labels: &[u32],
    label_smoothing: f32,
) -> Result<SubnetGradients> {
    let (n, r, classes) = (labels.len(), arch.resolution, net.space.num_classes);
    if n == 0 || images_nchw.len() != n * 3 * r * r {
        return Err(Error::shape(
            "gradient batch",
            format!("[{n}, 3, {r}, {r}] images for {n} labels"),
            images_nchw.len(),
        ));
    }
    if let Some(i) = labels.iter().position(|&l| l as usize >= classes) {
        return Err(Error::shape(format!("gradient labels[{i}]"), format!("a class in 0..{classes}"), labels[i]));
    }
    if !(0.0..=1.0).contains(&label_smoothing) {
        return Err(Error::usage(format!("label smoothing must be in [0, 1], got {label_smoothing}")));
    }
    net.space.validate(arch).map_err(Error::usage)?;
    let options = ForwardOptions::train();
    let len = arch_activation_arena_len(&net.space, arch, n, r, options, true, net.precision())?;
    let mut arena = Arena::new(b, "activations", len)?;
    let input = upload_new(b, &nchw_to_nhwc(images_nchw, n, 3, r))?;
    let label_values: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
    let labels_mem = upload_new(b, &label_values)?;
    let shape = LossShape { n, classes };
    let (rows, loss, dlogits) = (b.alloc(n)?, b.alloc(1)?, b.alloc(n * classes)?);

    net.zero_grads(b)?;
    let tape = net.forward(b, arch, input.tensor(), n, r, options, &mut arena)?;
    let logits = tape.head.logits;
    b.label_smoothing_ce_fwd(&shape, label_smoothing, logits, labels_mem.tensor(), rows.tensor(), loss.tensor())?;
    b.label_smoothing_ce_bwd(&shape, label_smoothing, logits, labels_mem.tensor(), dlogits.tensor())?;
    net.backward(b, &tape, dlogits.tensor(), &mut arena)?;

    let loss = b.download(loss.tensor())?.first().copied().unwrap_or(f32::NAN);
    let grads = net.named_grads(b)?;
    Ok(SubnetGradients { loss, grads })
}
