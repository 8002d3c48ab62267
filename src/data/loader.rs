//! The training/evaluation loader: per-epoch seeded shuffle split across ranks with no overlap and no
//! padding (rank r takes every world-th position from r, so every record is in exactly one rank's share;
//! see [`epoch_order`]), decode + transform on a rayon pool, and a producer thread that keeps `prefetch` batches
//! ready so decoding overlaps the training step. Batches are uint8 NHWC `(N, S, S, 3)`; their buffers
//! can be handed back ([`EpochIter::recycle`]) so the steady state allocates nothing.
//!
//! Pinned memory: the loader does not allocate it itself (it has no CUDA context). A recycled buffer
//! is refilled in place (same allocation, never shrunk or grown for a fixed batch size), so the trainer
//! can page-lock each new buffer once (cuMemHostRegister) and keep it registered while it circulates;
//! only as many distinct buffers exist as were ever in flight at once (a few more than `prefetch`).
//!
//! A sample's augmentation depends only on (seed, epoch, dataset index), so batches are identical for
//! any thread count. A record that fails to decode (cannot happen for files `prepare` wrote, but the
//! loader must not end a run) becomes a fill-colour image and is listed in [`Batch::failed`].

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use fast_image_resize::Resizer;
use rand::seq::SliceRandom;
use rayon::prelude::*;

use super::augment::{transform_into, TransformConfig};
use super::autoaugment::FILL;
use super::decode::decode_record;
use super::reader::PackedDataset;
use super::rng::{epoch_rng, sample_rng};
use crate::error::{Error, Result};

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub transform: TransformConfig,
    pub seed: u64,
    pub rank: usize,
    pub world: usize,
    pub shuffle: bool,
    pub drop_last: bool,
    /// Batches decoded ahead of the consumer.
    pub prefetch: usize,
    /// Decode threads; 0 = one per core.
    pub threads: usize,
}

impl LoaderConfig {
    pub fn train(batch_size: usize, crop: u32, seed: u64) -> Self {
        LoaderConfig {
            batch_size,
            transform: TransformConfig::train(crop),
            seed,
            rank: 0,
            world: 1,
            shuffle: true,
            drop_last: true,
            prefetch: 3,
            threads: 0,
        }
    }
    pub fn eval(batch_size: usize, crop: u32) -> Self {
        LoaderConfig {
            transform: TransformConfig::eval(crop),
            shuffle: false,
            drop_last: false,
            ..Self::train(batch_size, crop, 0)
        }
    }
}

/// One batch: `images` is `(n, side, side, 3)` uint8 NHWC.
#[derive(Debug)]
pub struct Batch {
    pub images: Vec<u8>,
    pub labels: Vec<u32>,
    /// Dataset index of each sample.
    pub indices: Vec<u32>,
    pub side: u32,
    /// Samples that could not be decoded: (dataset index, reason).
    pub failed: Vec<(u32, String)>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

pub struct Loader {
    data: Arc<PackedDataset>,
    cfg: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    /// The dataset indices this loader draws from (a train/held-out split); `None` = all records.
    subset: Option<Arc<Vec<u32>>>,
}

impl Loader {
    pub fn new(data: Arc<PackedDataset>, cfg: LoaderConfig) -> Result<Self> {
        if cfg.batch_size == 0 || cfg.transform.crop == 0 {
            return Err(Error::usage(format!(
                "loader: batch size {} and crop {} must be positive",
                cfg.batch_size, cfg.transform.crop
            )));
        }
        if cfg.world == 0 || cfg.rank >= cfg.world {
            return Err(Error::usage(format!("loader: rank {} of world size {}", cfg.rank, cfg.world)));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(cfg.threads)
            .thread_name(|i| format!("attnas-decode-{i}"))
            .build()
            .map_err(|e| Error::Other(format!("loader: decode thread pool: {e}")))?;
        Ok(Loader { data, cfg, pool: Arc::new(pool), subset: None })
    }

    /// A loader over the records `indices` of `data` only (e.g. the training part of a train/held-out
    /// split); the epoch order shuffles positions in this list. Errors on an index past the dataset.
    pub fn with_subset(data: Arc<PackedDataset>, cfg: LoaderConfig, indices: Vec<u32>) -> Result<Self> {
        if let Some(&bad) = indices.iter().find(|&&i| i as usize >= data.len()) {
            return Err(Error::usage(format!(
                "loader subset: index {bad} is past the end of {} ({} records)",
                data.path().display(),
                data.len()
            )));
        }
        let mut loader = Loader::new(data, cfg)?;
        loader.subset = Some(Arc::new(indices));
        Ok(loader)
    }

    /// Records this loader draws from.
    pub fn len(&self) -> usize {
        self.subset.as_ref().map_or(self.data.len(), |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }
    pub fn dataset(&self) -> &PackedDataset {
        &self.data
    }
    pub fn dataset_arc(&self) -> Arc<PackedDataset> {
        self.data.clone()
    }

    /// This rank's dataset indices for `epoch`, in order.
    pub fn epoch_indices(&self, epoch: u64) -> Vec<u32> {
        let order = epoch_order(self.len(), self.cfg.seed, epoch, self.cfg.shuffle, self.cfg.rank, self.cfg.world);
        match &self.subset {
            Some(subset) => order.into_iter().map(|i| subset[i as usize]).collect(),
            None => order,
        }
    }

    /// Number of batches this rank yields per epoch. With `drop_last` (training) it is the same on every
    /// rank: the full batches of the smallest share, `(len / world) / batch_size`, so all ranks step
    /// together. The records left out are the epoch's last partial global batch (fewer than
    /// `world * batch_size`), a different random tail every epoch, exactly what one device's drop_last
    /// leaves out at the same global batch. Without `drop_last` (evaluation) it is this rank's share,
    /// rounded up: every record is read once over all ranks.
    pub fn batches_per_epoch(&self) -> usize {
        if self.cfg.drop_last {
            (self.len() / self.cfg.world) / self.cfg.batch_size
        } else {
            self.epoch_indices(0).len().div_ceil(self.cfg.batch_size)
        }
    }

    /// Decodes and transforms the samples `indices` into `buf` (resized to fit) on the pool.
    pub fn load_into(&self, epoch: u64, indices: &[u32], buf: Vec<u8>) -> Batch {
        load_batch(&self.data, &self.cfg, &self.pool, epoch, indices, buf)
    }

    /// Starts the producer for `epoch`: an iterator of batches, `prefetch` of them decoded ahead.
    pub fn epoch(&self, epoch: u64) -> Result<EpochIter> {
        self.epoch_from(epoch, 0)
    }

    /// Like [`Loader::epoch`], starting at batch `skip` of the epoch (resuming mid-epoch without
    /// decoding the batches already trained on).
    pub fn epoch_from(&self, epoch: u64, skip: usize) -> Result<EpochIter> {
        let mut order = self.epoch_indices(epoch);
        if self.cfg.drop_last {
            order.truncate(self.batches_per_epoch() * self.cfg.batch_size);
        }
        order.drain(..(skip * self.cfg.batch_size).min(order.len()));
        let (tx, rx) = mpsc::sync_channel::<Batch>(self.cfg.prefetch.max(1));
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        let (data, cfg, pool) = (self.data.clone(), self.cfg.clone(), self.pool.clone());
        let handle = std::thread::Builder::new()
            .name("attnas-loader".into())
            .spawn(move || produce(data, cfg, pool, epoch, order, tx, free_rx))
            .map_err(|e| Error::Other(format!("loader: cannot start the producer thread: {e}")))?;
        Ok(EpochIter { rx: Some(rx), free: free_tx, handle: Some(handle) })
    }
}

/// Rank `rank`'s positions of epoch `epoch`: the permutation shuffled by (seed, epoch), every `world`-th
/// element from `rank`. No padding (PyTorch's DistributedSampler wraps to a multiple of the world size,
/// so some records are read twice and would be counted twice in an evaluation): the shares of all ranks
/// are disjoint, together hold every record exactly once, and differ in length by at most one.
///
/// Batch `s` of every rank together holds positions `s * world * b .. (s + 1) * world * b` of the
/// permutation, so a step sees the same records for any split of one global batch (2 ranks x 32 and
/// 1 x 64 train on the same images in the same steps).
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool, rank: usize, world: usize) -> Vec<u32> {
    let mut perm: Vec<u32> = (0..n as u32).collect();
    if shuffle {
        perm.shuffle(&mut epoch_rng(seed, epoch));
    }
    (rank..n).step_by(world.max(1)).map(|i| perm[i]).collect()
}

fn produce(
    data: Arc<PackedDataset>,
    cfg: LoaderConfig,
    pool: Arc<rayon::ThreadPool>,
    epoch: u64,
    order: Vec<u32>,
    tx: SyncSender<Batch>,
    free: Receiver<Vec<u8>>,
) {
    let chunks = order.chunks(cfg.batch_size).filter(|c| !cfg.drop_last || c.len() == cfg.batch_size);
    for chunk in chunks {
        let buf = free.try_recv().unwrap_or_default();
        let batch = load_batch(&data, &cfg, &pool, epoch, chunk, buf);
        if tx.send(batch).is_err() {
            return; // the consumer stopped early
        }
    }
}

fn load_batch(
    data: &PackedDataset,
    cfg: &LoaderConfig,
    pool: &rayon::ThreadPool,
    epoch: u64,
    indices: &[u32],
    mut images: Vec<u8>,
) -> Batch {
    let side = cfg.transform.crop;
    let slot = side as usize * side as usize * 3;
    images.resize(slot * indices.len(), 0);
    let failures: Vec<Option<(u32, String)>> = pool.install(|| {
        images
            .par_chunks_mut(slot)
            .zip(indices.par_iter())
            .map_init(Resizer::new, |resizer, (dst, &idx)| {
                let mut rng = sample_rng(cfg.seed, epoch, idx as u64);
                let result = data
                    .get(idx as usize)
                    .map_err(|e| e.to_string())
                    .and_then(|rec| decode_record(&rec, data.encoding(), data.channels()))
                    .and_then(|img| transform_into(resizer, &img, &cfg.transform, &mut rng, dst));
                match result {
                    Ok(()) => None,
                    Err(msg) => {
                        for px in dst.chunks_exact_mut(3) {
                            px.copy_from_slice(&FILL);
                        }
                        Some((idx, msg))
                    }
                }
            })
            .collect()
    });
    let labels = indices.iter().map(|&i| data.entries().get(i as usize).map_or(0, |e| e.label)).collect();
    Batch { images, labels, indices: indices.to_vec(), side, failed: failures.into_iter().flatten().collect() }
}

/// What [`EpochIter::try_next`] found.
#[derive(Debug)]
pub enum TryNext {
    /// The next batch, or `None`: the epoch has no more.
    Ready(Option<Batch>),
    /// The producer has not finished the next batch yet.
    NotYet,
}

/// The batches of one epoch, produced ahead on a background thread.
pub struct EpochIter {
    rx: Option<Receiver<Batch>>,
    free: mpsc::Sender<Vec<u8>>,
    handle: Option<JoinHandle<()>>,
}

impl EpochIter {
    /// The next batch if the producer has one ready, without waiting: `Ready(None)` at the end of the
    /// epoch, `NotYet` while the next batch is still being decoded.
    pub fn try_next(&mut self) -> TryNext {
        match self.rx.as_ref().map(|rx| rx.try_recv()) {
            Some(Ok(batch)) => TryNext::Ready(Some(batch)),
            Some(Err(mpsc::TryRecvError::Empty)) => TryNext::NotYet,
            Some(Err(mpsc::TryRecvError::Disconnected)) | None => TryNext::Ready(None),
        }
    }

    /// Gives a batch's image buffer back for reuse by a later batch.
    pub fn recycle(&self, batch: Batch) {
        let _ = self.free.send(batch.images);
    }
}

impl Iterator for EpochIter {
    type Item = Batch;
    fn next(&mut self) -> Option<Batch> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.rx = None; // unblocks a producer waiting to send
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
