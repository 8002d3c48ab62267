//! The loader on a real packed file (a slice of the ImageNet sample): epoch order is a seeded
//! permutation that changes per epoch and splits across ranks; batches have the promised shape and
//! labels; results are identical for any decode thread count and for the prefetching iterator vs direct
//! loads; drop_last; buffer recycling.

mod data_common;

use std::collections::HashSet;
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
    // 4 ranks: 26 each (103 padded to 104 by wrapping), together every index, one repeated once.
    let parts: Vec<Vec<u32>> = (0..4).map(|r| epoch_order(n, 7, 2, true, r, 4)).collect();
    assert!(parts.iter().all(|p| p.len() == 26));
    let all: Vec<u32> = parts.concat();
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), n);
    let whole = epoch_order(n, 7, 2, true, 0, 1);
    assert_eq!(parts[1][0], whole[1]);
    assert_eq!(parts[3][25], whole[0]); // the padding wraps to the start
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
