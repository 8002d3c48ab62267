//! An accuracy predictor on the gene vector of spec 4.5 ([resolution] + width + depth + kernel + expand,
//! [`Arch::to_vector`]; 31 numbers for AttentiveNAS), fit on (arch, top-1) pairs such as those a search
//! writes to `evaluated.csv`. Used to rank subnets: as a filter on search children and as the scorer of
//! attentive sampling in training (`train.sampler.scorer: predictor`).
//!
//! The model is ridge regression on standardised features: every gene's value, plus, for genes with
//! three or more values seen, one indicator per value. Why this and not the original's random forest
//! (spec 4.5: 100 trees of depth 15 on 512 pairs):
//! - The pairs are few (hundreds to a few thousand; each costs a BN recalibration and an evaluation), and
//!   supernet accuracy is close to additive in the genes: resolution, depth, width and expand ratio each
//!   move it one way (the original forest put 95 % of its importance on resolution). An additive model
//!   with per-value indicators fits that with ~100-200 weights; the numeric term keeps an order for a
//!   value the fit never saw.
//! - A forest is piecewise constant: many subnets of one FLOPs range share a leaf and tie, which is the
//!   regime attentive sampling scores in (k candidates of one FLOPs bin). Ridge gives a strict order.
//! - It is closed form and deterministic (one Cholesky solve per candidate lambda; lambda by k-fold
//!   cross-validation), fits in milliseconds, and saves as a short JSON file.
//!
//! Quality is reported as Kendall's tau on held-out pairs (`attnas predictor fit`), as in the paper.

pub mod linalg;
pub mod rank;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::space::{Arch, Space};
use crate::util::atomic::write_atomic;

/// The format tag of a predictor file.
pub const FORMAT: &str = "attnas-predictor/1";

/// One input of the linear model: a gene's value, or an indicator (`equals`) of one of its values,
/// standardised with the fit data's mean and scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    /// Index into the gene vector.
    pub gene: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<usize>,
    pub mean: f64,
    pub scale: f64,
}

impl Feature {
    fn raw(&self, v: &[usize]) -> f64 {
        match self.equals {
            None => v[self.gene] as f64,
            Some(x) => f64::from(u8::from(v[self.gene] == x)),
        }
    }
    fn value(&self, v: &[usize]) -> f64 {
        (self.raw(v) - self.mean) / self.scale
    }
}

/// A fitted predictor (the JSON file's content).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Predictor {
    pub format: String,
    /// `ridge`.
    pub model: String,
    /// Length of the gene vector it takes.
    pub genes: usize,
    /// What it predicts: `top1` (percent).
    pub target: String,
    pub features: Vec<Feature>,
    pub weights: Vec<f64>,
    pub intercept: f64,
    /// The ridge strength chosen (relative: the penalty is lambda * pairs * |w|^2).
    pub lambda: f64,
    pub fit_pairs: usize,
    /// Pairs held out of the fit and Kendall's tau on them (`None` when none were held out).
    #[serde(default)]
    pub heldout_pairs: usize,
    #[serde(default)]
    pub heldout_kendall_tau: Option<f64>,
    /// The space the pairs came from, when known.
    #[serde(default)]
    pub space: Option<String>,
}

/// How [`Predictor::fit`] picks its ridge strength.
#[derive(Clone, Debug, PartialEq)]
pub struct FitOptions {
    /// Candidate lambdas, tried by k-fold cross-validation (mean squared error).
    pub lambdas: Vec<f64>,
    pub folds: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions { lambdas: vec![1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0], folds: 5 }
    }
}

/// The standardised features of the fit data: which inputs exist, given what varies.
fn design(x: &[Vec<usize>], genes: usize) -> Vec<Feature> {
    let n = x.len() as f64;
    let mut out = Vec::new();
    let mut push = |gene: usize, equals: Option<usize>| {
        let mut f = Feature { gene, equals, mean: 0.0, scale: 1.0 };
        let mean = x.iter().map(|v| f.raw(v)).sum::<f64>() / n;
        let var = x.iter().map(|v| (f.raw(v) - mean).powi(2)).sum::<f64>() / n;
        if var > 1e-12 {
            f.mean = mean;
            f.scale = var.sqrt();
            out.push(f);
        }
    };
    for gene in 0..genes {
        let mut values: Vec<usize> = x.iter().map(|v| v[gene]).collect();
        values.sort_unstable();
        values.dedup();
        push(gene, None);
        if values.len() >= 3 {
            for v in values {
                push(gene, Some(v));
            }
        }
    }
    out
}

/// Sufficient statistics of some rows of (z, y): counts, sums and the uncentred Gram matrix, so that
/// cross-validation subtracts a fold instead of re-reading the rows.
#[derive(Clone)]
struct Moments {
    n: f64,
    sum_z: Vec<f64>,
    sum_y: f64,
    /// d x d, sum of z z^T.
    gram: Vec<f64>,
    /// sum of z y.
    zy: Vec<f64>,
}

impl Moments {
    fn zero(d: usize) -> Moments {
        Moments { n: 0.0, sum_z: vec![0.0; d], sum_y: 0.0, gram: vec![0.0; d * d], zy: vec![0.0; d] }
    }

    fn add(&mut self, z: &[f64], y: f64) {
        let d = z.len();
        self.n += 1.0;
        self.sum_y += y;
        for j in 0..d {
            self.sum_z[j] += z[j];
            self.zy[j] += z[j] * y;
            for k in 0..d {
                self.gram[j * d + k] += z[j] * z[k];
            }
        }
    }

    /// `self - other` (the rows of `self` not in `other`).
    fn minus(&self, other: &Moments) -> Moments {
        let sub = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(a, b)| a - b).collect();
        Moments {
            n: self.n - other.n,
            sum_z: sub(&self.sum_z, &other.sum_z),
            sum_y: self.sum_y - other.sum_y,
            gram: sub(&self.gram, &other.gram),
            zy: sub(&self.zy, &other.zy),
        }
    }

    /// Ridge weights and intercept: minimises |y - b - z w|^2 + lambda n |w|^2 with the intercept
    /// unpenalised (the normal equations of the centred data).
    fn solve(&self, lambda: f64) -> Result<(Vec<f64>, f64)> {
        let d = self.sum_z.len();
        let n = self.n;
        let m: Vec<f64> = self.sum_z.iter().map(|s| s / n).collect();
        let y_mean = self.sum_y / n;
        let mut a = vec![0.0; d * d];
        for j in 0..d {
            for k in 0..d {
                a[j * d + k] = self.gram[j * d + k] - n * m[j] * m[k];
            }
            a[j * d + j] += lambda * n;
        }
        let b: Vec<f64> = (0..d).map(|j| self.zy[j] - n * m[j] * y_mean).collect();
        let w = linalg::cholesky_solve(&a, &b, d)
            .ok_or_else(|| Error::Other(format!("ridge solve failed (lambda {lambda}, {d} features)")))?;
        let intercept = y_mean - w.iter().zip(&m).map(|(w, m)| w * m).sum::<f64>();
        Ok((w, intercept))
    }
}

impl Predictor {
    /// Fits gene vectors `x` (all of one length) to targets `y`. Errors (usage) with fewer than two
    /// pairs, ragged vectors or non-finite targets.
    pub fn fit(x: &[Vec<usize>], y: &[f64], options: &FitOptions) -> Result<Predictor> {
        if x.len() != y.len() || x.len() < 2 {
            return Err(Error::usage(format!("a predictor needs at least 2 (arch, top-1) pairs, got {}", x.len())));
        }
        let genes = x[0].len();
        if let Some(i) = x.iter().position(|v| v.len() != genes) {
            return Err(Error::usage(format!("pair {i} has {} genes, pair 0 has {genes}", x[i].len())));
        }
        if let Some(i) = y.iter().position(|v| !v.is_finite()) {
            return Err(Error::usage(format!("pair {i} has a non-finite top-1 ({})", y[i])));
        }
        let features = design(x, genes);
        let z: Vec<Vec<f64>> = x.iter().map(|v| features.iter().map(|f| f.value(v)).collect()).collect();
        let n = x.len();
        let d = features.len();
        let folds = options.folds.min(n);
        let mut by_fold = vec![Moments::zero(d); folds.max(1)];
        let mut total = Moments::zero(d);
        for (i, (zi, &yi)) in z.iter().zip(y).enumerate() {
            by_fold[i % folds.max(1)].add(zi, yi);
            total.add(zi, yi);
        }
        let mut lambda = options.lambdas.first().copied().unwrap_or(1e-2);
        if folds >= 2 && options.lambdas.len() > 1 {
            let mut best = f64::INFINITY;
            for &l in &options.lambdas {
                let mut sse = 0.0;
                for (fold, held) in by_fold.iter().enumerate() {
                    let (w, b) = total.minus(held).solve(l)?;
                    for i in (fold..n).step_by(folds) {
                        let p = b + w.iter().zip(&z[i]).map(|(w, z)| w * z).sum::<f64>();
                        sse += (p - y[i]).powi(2);
                    }
                }
                if sse < best {
                    best = sse;
                    lambda = l;
                }
            }
        }
        let (weights, intercept) = total.solve(lambda)?;
        Ok(Predictor {
            format: FORMAT.to_string(),
            model: "ridge".to_string(),
            genes,
            target: "top1".to_string(),
            features,
            weights,
            intercept,
            lambda,
            fit_pairs: n,
            heldout_pairs: 0,
            heldout_kendall_tau: None,
            space: None,
        })
    }

    /// Predicted top-1 of a gene vector; errors (usage) on a vector of the wrong length.
    pub fn predict_vector(&self, v: &[usize]) -> Result<f64> {
        if v.len() != self.genes {
            return Err(Error::usage(format!(
                "the predictor takes {}-gene archs, got {} genes (was it fit on another space?)",
                self.genes,
                v.len()
            )));
        }
        Ok(self.intercept + self.features.iter().zip(&self.weights).map(|(f, w)| w * f.value(v)).sum::<f64>())
    }

    /// Predicted top-1 of an arch.
    pub fn predict(&self, arch: &Arch) -> Result<f64> {
        self.predict_vector(&arch.to_vector())
    }

    /// Errors (usage) unless the predictor takes this space's gene vectors.
    pub fn check_space(&self, space: &Space, origin: &str) -> Result<()> {
        let genes = space.genes().len();
        if self.genes != genes {
            return Err(Error::usage(format!(
                "predictor {origin} was fit on {}-gene archs{}, but space '{}' has {genes} genes; fit one on this \
                 space's search results (attnas predictor fit)",
                self.genes,
                self.space.as_ref().map(|s| format!(" of space '{s}'")).unwrap_or_default(),
                space.name
            )));
        }
        Ok(())
    }

    /// Reads and checks a predictor file.
    pub fn load(path: &Path) -> Result<Predictor> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let p: Predictor = serde_json::from_str(&text).map_err(|e| Error::input(path, e.line(), e.to_string()))?;
        let bad = |msg: String| Err(Error::input(path, 0, msg));
        if p.format != FORMAT || p.model != "ridge" {
            return bad(format!("format '{}' model '{}'; expected {FORMAT} ridge", p.format, p.model));
        }
        if p.weights.len() != p.features.len() {
            return bad(format!("{} weights for {} features", p.weights.len(), p.features.len()));
        }
        if let Some(f) = p.features.iter().find(|f| f.gene >= p.genes || f.scale.is_nan() || f.scale <= 0.0) {
            return bad(format!("feature of gene {} (scale {}) does not fit {} genes", f.gene, f.scale, p.genes));
        }
        Ok(p)
    }

    /// Writes the predictor as pretty JSON, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Other(e.to_string()))?;
        write_atomic(path, |w| w.write_all(text.as_bytes()).map_err(|e| Error::io(path, e)))
    }
}
