//! The loader on a real packed file (a slice of the ImageNet sample): epoch order is a seeded
//! permutation that changes per epoch and splits across ranks; batches have the promised shape and
//! labels; results are identical for any decode thread count and for the prefetching iterator vs direct
//! loads; drop_last; buffer recycling.

mod data_common;

use std::sync::Arc;

use attnas::data::loader::{epoch_order, Loader, LoaderConfig};
use attnas::data::prepare::{prepare, PayloadMode, PrepareOptions};
use attnas::data::PackedDataset;
use data_common::{copy_sample_classes, imagenet_sample, raw_pack, scratch};

#[test]
fn epoch_order_is_a_seeded_permutation_split_by_rank() {
    let n = 103;
    let e0 = epoch_order(n, 7, 0, true, 0, 1);
    let mut sorted = e0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..n as u32).collect::<Vec<_>>());
    assert_eq!(e0, epoch_order(n, 7, 0, true, 0, 1));
    assert_ne!(e0, epoch_order(n, 7, 1, true, 0, 1));
    assert_ne!(e0, epoch_order(n, 8, 0, true, 0, 1));
    assert_eq!(epoch_order(5, 7, 3, false, 0, 1), [0, 1, 2, 3, 4]);
    // 4 ranks: 26, 26, 26, 25 (no padding), together every index exactly once.
    let parts: Vec<Vec<u32>> = (0..4).map(|r| epoch_order(n, 7, 2, true, r, 4)).collect();
    assert_eq!(parts.iter().map(Vec::len).collect::<Vec<_>>(), [26, 26, 26, 25]);
    let mut all: Vec<u32> = parts.concat();
    all.sort();
    assert_eq!(all, (0..n as u32).collect::<Vec<_>>());
    let whole = epoch_order(n, 7, 2, true, 0, 1);
    assert_eq!(parts[1][0], whole[1]);
    assert_eq!(parts[2][25], whole[102]);
}

/// Every record exactly once per epoch over all ranks, for world sizes 1..8 and odd dataset sizes; with
/// drop_last every rank yields the same number of batches, and together step `s` of all ranks holds
/// positions `s * world * b .. (s + 1) * world * b` of the epoch's permutation (the same records as one
/// device at the same global batch).
#[test]
fn the_rank_partition_covers_every_record_once_for_any_world_and_size() {
    for n in [1usize, 7, 33, 97, 101, 1001] {
        for world in 1..=8usize {
            for epoch in [0u64, 3] {
                let parts: Vec<Vec<u32>> = (0..world).map(|r| epoch_order(n, 11, epoch, true, r, world)).collect();
                let mut seen = vec![0u32; n];
                for p in &parts {
                    for &i in p {
                        seen[i as usize] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "n {n} world {world}: {seen:?}");
                let (lo, hi) = (parts.iter().map(Vec::len).min().unwrap(), parts.iter().map(Vec::len).max().unwrap());
                assert!(hi - lo <= 1 && lo == n / world, "n {n} world {world}: shares {lo}..{hi}");
                let whole = epoch_order(n, 11, epoch, true, 0, 1);
                for b in [1usize, 2, 5] {
                    let steps = lo / b;
                    assert_eq!(steps, n / (world * b), "drop_last steps = full global batches");
                    for s in 0..steps {
                        let mut got: Vec<u32> = parts.iter().flat_map(|p| p[s * b..(s + 1) * b].to_vec()).collect();
                        let mut want = whole[s * world * b..(s + 1) * world * b].to_vec();
                        got.sort();
                        want.sort();
                        assert_eq!(got, want, "n {n} world {world} batch {b} step {s}");
                    }
                }
            }
        }
    }
}

fn raw_dataset(dir: &std::path::Path) -> Arc<PackedDataset> {
    // 10 grey 6x4 images, image i filled with 20 * i, label i % 3.
    let recs: Vec<(u32, u32, u32, Vec<u8>)> = (0..10u32).map(|i| (i % 3, 6, 4, vec![(20 * i) as u8; 24])).collect();
    let path = dir.join("raw.pack");
    std::fs::write(&path, raw_pack(&["a", "b", "c"], &recs)).unwrap();
    Arc::new(PackedDataset::open(&path).unwrap())
}

#[test]
fn eval_batches_have_shape_labels_and_pixels() {
    let dir = scratch("loader-raw");
    let ds = raw_dataset(&dir);
    let cfg = LoaderConfig { threads: 2, ..LoaderConfig::eval(4, 8) };
    let loader = Loader::new(ds, cfg).unwrap();
    assert_eq!(loader.batches_per_epoch(), 3);
    let batches: Vec<_> = loader.epoch(0).unwrap().collect();
    assert_eq!(batches.iter().map(|b| b.len()).collect::<Vec<_>>(), [4, 4, 2]);
    for b in &batches {
        assert_eq!(b.images.len(), b.len() * 8 * 8 * 3);
        assert!(b.failed.is_empty());
        for (k, &idx) in b.indices.iter().enumerate() {
            assert_eq!(b.labels[k], idx % 3);
            // A constant grey image stays that grey through resize and crop, in all three channels.
            let v = (20 * idx) as u8;
            assert!(b.images[k * 192..(k + 1) * 192].iter().all(|&p| p == v), "sample {idx}");
        }
    }
    let order: Vec<u32> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>());
    // drop_last drops the short batch.
    let loader =
        Loader::new(loader.dataset_arc(), LoaderConfig { drop_last: true, ..LoaderConfig::eval(4, 8) }).unwrap();
    assert_eq!(loader.epoch(0).unwrap().count(), 2);
}

#[test]
fn ranks_step_together_and_evaluation_reads_every_record_once() {
    let dir = scratch("loader-ranks");
    let ds = raw_dataset(&dir);
    // 10 records over 3 ranks: shares 4, 3, 3. Training (drop_last, batch 2): one batch on every rank,
    // although rank 0's share holds two. Evaluation (no drop_last, batch 2): 2 + 2 + 2 batches, 10 images.
    let mut train_counts = Vec::new();
    let mut eval_seen = Vec::new();
    for rank in 0..3 {
        let cfg = LoaderConfig { rank, world: 3, threads: 1, ..LoaderConfig::train(2, 8, 5) };
        let loader = Loader::new(ds.clone(), cfg).unwrap();
        assert_eq!(loader.batches_per_epoch(), 1, "rank {rank}");
        train_counts.push(loader.epoch(0).unwrap().count());
        let cfg = LoaderConfig { rank, world: 3, threads: 1, ..LoaderConfig::eval(2, 8) };
        let loader = Loader::new(ds.clone(), cfg).unwrap();
        let batches: Vec<_> = loader.epoch(0).unwrap().collect();
        assert_eq!(batches.len(), loader.batches_per_epoch());
        eval_seen.extend(batches.iter().flat_map(|b| b.indices.clone()));
    }
    assert_eq!(train_counts, [1, 1, 1]);
    eval_seen.sort();
    assert_eq!(eval_seen, (0..10).collect::<Vec<u32>>());
}

#[test]
fn train_batches_are_deterministic_across_threads_and_prefetch() {
    let Some(sample) = imagenet_sample("train_batches_are_deterministic_across_threads_and_prefetch") else { return };
    let dir = scratch("loader-real");
    let src = dir.join("src");
    copy_sample_classes(&sample, &src, 10);
    let opts = PrepareOptions {
        payload: PayloadMode::Reencode { max_side: 160, quality: 90 },
        progress: false,
        ..Default::default()
    };
    let s = prepare(&src, &dir.join("out"), &opts).unwrap();
    let ds = Arc::new(PackedDataset::open(&s[0].path).unwrap());
    let mk = |threads: usize, seed: u64| {
        let cfg = LoaderConfig { threads, prefetch: 2, ..LoaderConfig::train(4, 64, seed) };
        Loader::new(ds.clone(), cfg).unwrap()
    };
    let one = mk(1, 11);
    let two = mk(2, 11);
    let a: Vec<_> = one.epoch(3).unwrap().collect();
    let b: Vec<_> = two.epoch(3).unwrap().collect();
    assert_eq!(a.len(), 2); // 10 images, batch 4, drop_last
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.indices, y.indices);
        assert_eq!(x.images, y.images);
        assert_eq!(x.labels, x.indices.iter().map(|&i| ds.entries()[i as usize].label).collect::<Vec<_>>());
        assert_eq!(x.images.len(), 4 * 64 * 64 * 3);
    }
    // The iterator yields what direct loads give.
    let direct = one.load_into(3, &a[1].indices, Vec::new());
    assert_eq!(direct.images, a[1].images);
    // Another epoch or seed changes order and pixels.
    let c: Vec<_> = mk(2, 11).epoch(4).unwrap().collect();
    assert_ne!(c[0].images, a[0].images);
    let d: Vec<_> = mk(2, 12).epoch(3).unwrap().collect();
    assert_ne!(d[0].images, a[0].images);
    // Recycled buffers are reused and give identical batches.
    let mut it = one.epoch(3).unwrap();
    let mut again = Vec::new();
    while let Some(batch) = it.next() {
        again.push(batch.images.clone());
        it.recycle(batch);
    }
    assert_eq!(again, a.iter().map(|b| b.images.clone()).collect::<Vec<_>>());
    // Stopping early does not hang.
    let first = mk(2, 11).epoch(0).unwrap().next().unwrap();
    assert_eq!(first.len(), 4);
}
