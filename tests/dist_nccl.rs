//! NCCL device collectives on real GPUs (each test prints one `skipped:` line without them):
//! - one rank on one GPU: a communicator of world size 1, all-reduce (sum, mean) and broadcast in place;
//! - two ranks where two GPUs exist (threads of this process, each driving its GPU, the host side over
//!   loopback TCP as between processes): all-reduce and broadcast values, then 5 training steps of the
//!   tiny space with the gradients averaged by NCCL in buckets on its own stream: the parameters stay
//!   bit-identical on both GPUs.

use std::sync::Arc;

use attnas::backend::cuda::gpu::GpuDevice;
use attnas::backend::cuda::probe;
use attnas::backend::cuda::CudaBackend;
use attnas::backend::{Arena, Backend, DeviceMemory};
use attnas::dist::nccl::{NcclComm, NcclRanks};
use attnas::dist::sync::{agree_at_start, StepSync};
use attnas::dist::tcp::{Endpoint, TcpRank};
use attnas::dist::{DeviceCollectives, HostCollectives, ReduceOp, SingleRank, Timeouts};
use attnas::nn::{activation_arena_len, Supernet};
use attnas::space::attentive::{AttentiveSampler, Prior, Selection};
use attnas::space::table::{generate, TableMethod};
use attnas::space::Space;
use attnas::testing::random_vec;
use attnas::train::step::{CandidateScorer, MiddleSampling, StepBuffers, StepSettings, StepState};
use rand::SeedableRng;

fn gpus(test: &str, need: usize) -> bool {
    let n = probe::device_count().unwrap_or(0);
    if n < need {
        println!("skipped: {test}: needs {need} GPU(s), found {n}");
        return false;
    }
    if let Err(why) = attnas::dist::nccl::library_status() {
        // a GPU machine without NCCL is a failure: the bundle installs or finds it
        if attnas::dist::nccl::library_dir_fix().is_none() {
            panic!("{test}: NCCL: {why}");
        }
    }
    true
}

#[test]
fn nccl_with_one_rank_on_one_gpu() {
    if !gpus("nccl_with_one_rank_on_one_gpu", 1) {
        return;
    }
    let b = CudaBackend::new(GpuDevice::open(0).unwrap());
    let h = b.device_handle().expect("a GPU backend has a device handle");
    let comm = match NcclComm::init(&SingleRank, &h, Timeouts::default()) {
        Ok(c) => c,
        Err(e) => panic!("NCCL init: {e} (LD_LIBRARY_PATH must hold libnccl.so; see docs/distributed.md)"),
    };
    assert!(comm.describe().starts_with("NCCL "), "{}", comm.describe());
    let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 3.0).collect();
    let mem = b.alloc(v.len()).unwrap();
    b.upload(mem.tensor(), &v).unwrap();
    for op in [ReduceOp::Sum, ReduceOp::Mean] {
        comm.all_reduce_f32_async(mem.tensor().addr(), v.len(), op, h.stream).unwrap();
        comm.join(h.stream).unwrap();
        assert_eq!(b.download(mem.tensor()).unwrap(), v, "{op:?} over one rank is the identity");
    }
    comm.broadcast_f32_async(mem.tensor().addr(), v.len(), 0, h.stream).unwrap();
    comm.join(h.stream).unwrap();
    assert_eq!(b.download(mem.tensor()).unwrap(), v);
}

fn settings() -> StepSettings {
    StepSettings {
        label_smoothing: 0.1,
        kd: attnas::train::step::Distillation::Kl,
        dropout: 0.2,
        drop_connect: 0.2,
        drop_connect_only_last_two_stages: false,
        num_arch_training: 4,
        sampling: MiddleSampling::Attentive(Selection::BestUp),
        num_trials: 3,
        scorer: CandidateScorer::Loss,
        momentum: 0.9,
        clip: 1.0,
        seed: 7,
    }
}

/// Rank `rank` of 2 on GPU `rank`: collectives, then 5 steps; returns the final parameters.
fn gpu_rank(rank: usize, port: u16) -> Vec<f32> {
    let t = Timeouts::default();
    let ep = Endpoint { host: "127.0.0.1".into(), port, origin: "test".into() };
    let ranks: Arc<dyn HostCollectives> = Arc::new(NcclRanks::new(TcpRank::connect(rank, 2, &ep, t).unwrap(), t));
    let b = CudaBackend::new(GpuDevice::open(rank).unwrap());
    agree_at_start(ranks.as_ref(), &b, &[("test", "dist_nccl".into())]).unwrap();
    let dev = ranks.device().expect("NCCL attached");
    let h = b.device_handle().unwrap();
    // values: rank + 1 everywhere -> sum 3, mean 1.5; broadcast from rank 1
    let mem = b.alloc(4099).unwrap();
    b.upload(mem.tensor(), &vec![rank as f32 + 1.0; 4099]).unwrap();
    dev.all_reduce_f32_async(mem.tensor().addr(), 4099, ReduceOp::Sum, h.stream).unwrap();
    dev.join(h.stream).unwrap();
    assert!(b.download(mem.tensor()).unwrap().iter().all(|&x| x == 3.0));
    b.upload(mem.tensor(), &vec![rank as f32 + 1.0; 4099]).unwrap();
    dev.all_reduce_f32_async(mem.tensor().addr(), 4099, ReduceOp::Mean, h.stream).unwrap();
    dev.join(h.stream).unwrap();
    assert!(b.download(mem.tensor()).unwrap().iter().all(|&x| x == 1.5));
    b.upload(mem.tensor(), &vec![rank as f32 + 1.0; 4099]).unwrap();
    dev.broadcast_f32_async(mem.tensor().addr(), 4099, 1, h.stream).unwrap();
    dev.join(h.stream).unwrap();
    assert!(b.download(mem.tensor()).unwrap().iter().all(|&x| x == 2.0));

    // 5 training steps, each rank on its own batch
    let (n, side) = (8, 28);
    let space = Space::builtin("tiny").unwrap();
    let net = Supernet::new(&b, space.clone(), 3).unwrap();
    let mut arena =
        Arena::new(&b, "act", activation_arena_len(&space, n, side, true, attnas::backend::Dtype::F32).unwrap())
            .unwrap();
    let bufs = StepBuffers::new(&b, n, side, space.num_classes).unwrap();
    let groups = net.param_groups(1e-5, &[".bn".into(), ".bias".into()]).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let table = generate(&space, 500, TableMethod::Uniform, 0.05, &mut rng);
    let mut sampler = AttentiveSampler::new(&space, &table, 0.05, Prior::Empirical).unwrap();
    let mut sync = StepSync::new(ranks.as_ref(), &net, 16 << 10, true);
    for step in 0..5u64 {
        let images = random_vec(100 * rank as u64 + step, n * side * side * 3, -2.0, 2.0);
        let labels: Vec<u32> = (0..n as u32).map(|i| (i + rank as u32 + step as u32) % 10).collect();
        bufs.upload(&b, &images, &labels).unwrap();
        let mut st = StepState {
            b: &b,
            net: &net,
            arena: &mut arena,
            bufs: &bufs,
            groups: &groups,
            sampler: Some(&mut sampler),
        };
        st.run_ranked(step, 0.05, &settings(), &mut sync).unwrap();
    }
    let params = b.download(net.params_arena()).unwrap();
    ranks.barrier().unwrap();
    params
}

#[test]
fn two_gpu_ranks_reduce_and_stay_bit_identical() {
    if !gpus("two_gpu_ranks_reduce_and_stay_bit_identical", 2) {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let h1 = std::thread::spawn(move || gpu_rank(1, port));
    let p0 = gpu_rank(0, port);
    let p1 = h1.join().unwrap();
    assert!(p0.iter().zip(&p1).all(|(a, b)| a.to_bits() == b.to_bits()), "parameters differ across GPUs");
}
