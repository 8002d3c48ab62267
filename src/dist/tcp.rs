//! Host collectives between OS processes over TCP: a star with rank 0 as the hub. It carries the host
//! side of a multi-process job: the rendezvous (who is here), small values (stop flags, fingerprints,
//! counts, attentive scores), the NCCL unique id of GPU ranks and, for CPU ranks run as processes (the
//! test vehicle), host gradient buffers. GPU tensors never go through it, and it is not offered for
//! multi-node CPU training: every message passes through rank 0.
//!
//! Rendezvous: rank 0 listens on the rendezvous port (see [`super::env`] for the port rule) and waits up
//! to the rendezvous timeout for the other `world - 1` ranks; each connects (retrying until the same
//! timeout), says hello (protocol tag, rank, world size) and is welcomed, or refused with the reason
//! (a duplicate rank, another world size).
//!
//! A collective: every rank sends its bytes to rank 0, which answers each with all of them. Frames are
//! `[kind u8][round u64][count u32]` then `count` times `[len u64][bytes]`.
//!
//! Failure: a rank whose connection closes (its process died), that does not reach a collective within
//! the watchdog timeout (hung), or that aborts, is named to every other rank (rank 0 forwards an abort
//! frame); they stop with an error naming it and the last good checkpoint. Rank 0's own death closes
//! every connection, which the others see at once.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{HostCollectives, LastCheckpoint, RankContext, Timeouts};
use crate::error::{Error, Result};

const HELLO_TAG: &[u8; 8] = b"ATTNASR1";
const KIND_DATA: u8 = 0;
const KIND_ABORT: u8 = 1;
const KIND_HELLO: u8 = 2;
const KIND_WELCOME: u8 = 3;
const KIND_REFUSE: u8 = 4;
/// Largest frame item accepted (a corrupted length must not allocate the machine away).
const MAX_ITEM_BYTES: u64 = 1 << 34;
/// How much longer than the collective timeout a spoke waits for rank 0's answer (rank 0 itself may be
/// waiting the full timeout for a hung rank before it can say so).
const SPOKE_GRACE: Duration = Duration::from_secs(15);

/// Where rank 0 listens: a host name or address and the rendezvous port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// The variable(s) the endpoint came from, for error messages (`MASTER_ADDR`, ...).
    pub origin: String,
}

enum Link {
    /// Rank 0: one stream per other rank (index = rank; index 0 unused).
    Hub(Vec<Option<TcpStream>>),
    Spoke(TcpStream),
}

/// One process's handle on the star.
pub struct TcpRank {
    rank: usize,
    world: usize,
    timeouts: Timeouts,
    link: Mutex<(Link, u64)>,
    /// Clones of the streams, for an abort from another thread while a collective blocks.
    abort_streams: Vec<TcpStream>,
    aborted: Mutex<Option<String>>,
    last_ckpt: LastCheckpoint,
}

struct Frame {
    kind: u8,
    round: u64,
    items: Vec<Vec<u8>>,
}

fn write_frame(s: &mut TcpStream, kind: u8, round: u64, items: &[&[u8]]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(13 + items.iter().map(|i| i.len() + 8).sum::<usize>());
    buf.push(kind);
    buf.extend_from_slice(&round.to_le_bytes());
    buf.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for it in items {
        buf.extend_from_slice(&(it.len() as u64).to_le_bytes());
        buf.extend_from_slice(it);
    }
    s.write_all(&buf)?;
    s.flush()
}

/// Why reading a frame failed: the peer closed the connection, the deadline passed, or garbage.
enum ReadFail {
    Closed,
    TimedOut,
    Bad(String),
}

fn read_exact_by(s: &mut TcpStream, buf: &mut [u8], deadline: Instant) -> std::result::Result<(), ReadFail> {
    let mut at = 0;
    while at < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ReadFail::TimedOut);
        }
        s.set_read_timeout(Some(left.max(Duration::from_millis(1)))).map_err(|e| ReadFail::Bad(e.to_string()))?;
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err(ReadFail::Closed),
            Ok(n) => at += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
                ) =>
            {
                return Err(ReadFail::Closed)
            }
            Err(e) => return Err(ReadFail::Bad(e.to_string())),
        }
    }
    Ok(())
}

fn read_frame(s: &mut TcpStream, deadline: Instant) -> std::result::Result<Frame, ReadFail> {
    let mut head = [0u8; 13];
    read_exact_by(s, &mut head, deadline)?;
    let kind = head[0];
    let round = u64::from_le_bytes(head[1..9].try_into().unwrap_or([0; 8]));
    let count = u32::from_le_bytes(head[9..13].try_into().unwrap_or([0; 4])) as usize;
    if count > 1 << 20 {
        return Err(ReadFail::Bad(format!("frame of {count} items")));
    }
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        let mut len = [0u8; 8];
        read_exact_by(s, &mut len, deadline)?;
        let len = u64::from_le_bytes(len);
        if len > MAX_ITEM_BYTES {
            return Err(ReadFail::Bad(format!("frame item of {len} bytes")));
        }
        let mut item = vec![0u8; len as usize];
        read_exact_by(s, &mut item, deadline)?;
        items.push(item);
    }
    Ok(Frame { kind, round, items })
}

/// Whether `s` is connected to itself (local and peer address equal): what a dial to a local port in the
/// ephemeral range with no listener can produce, by TCP's simultaneous open.
fn is_self_connection(s: &TcpStream) -> bool {
    matches!((s.local_addr(), s.peer_addr()), (Ok(l), Ok(p)) if l == p)
}

fn hello_bytes(rank: usize, world: usize) -> Vec<u8> {
    let mut b = HELLO_TAG.to_vec();
    b.extend_from_slice(&(rank as u64).to_le_bytes());
    b.extend_from_slice(&(world as u64).to_le_bytes());
    b
}

fn parse_hello(items: &[Vec<u8>]) -> Option<(usize, usize)> {
    let b = items.first()?;
    if b.len() != 24 || &b[..8] != HELLO_TAG {
        return None;
    }
    let rank = u64::from_le_bytes(b[8..16].try_into().ok()?) as usize;
    let world = u64::from_le_bytes(b[16..24].try_into().ok()?) as usize;
    Some((rank, world))
}

/// Resolves `ep` to socket addresses; a one-line usage error naming the variable when it does not.
pub fn resolve(ep: &Endpoint) -> Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = (ep.host.as_str(), ep.port)
        .to_socket_addrs()
        .map_err(|e| {
            Error::usage(format!(
                "{}={} does not resolve ({e}): set it to rank 0's host name or IP address, the same on every rank",
                ep.origin, ep.host
            ))
        })?
        .collect();
    if addrs.is_empty() {
        return Err(Error::usage(format!("{}={} resolves to no address", ep.origin, ep.host)));
    }
    Ok(addrs)
}

impl TcpRank {
    /// Joins the star as `rank` of `world`: rank 0 listens on `ep.port`, the others connect to `ep`.
    /// Bounded by the rendezvous timeout; every failure is a one-line error naming the variable to fix.
    pub fn connect(rank: usize, world: usize, ep: &Endpoint, timeouts: Timeouts) -> Result<TcpRank> {
        if world == 0 || rank >= world {
            return Err(Error::usage(format!("rank {rank} of world size {world}: ranks are 0..world-1")));
        }
        let deadline = Instant::now() + timeouts.rendezvous;
        let (link, abort_streams) = if rank == 0 {
            let peers = Self::accept_all(world, ep, deadline, timeouts)?;
            let clones = peers.iter().flatten().filter_map(|s| s.try_clone().ok()).collect();
            (Link::Hub(peers), clones)
        } else {
            let s = Self::join_hub(rank, world, ep, deadline, timeouts)?;
            let clone = s.try_clone().map(|c| vec![c]).unwrap_or_default();
            (Link::Spoke(s), clone)
        };
        Ok(TcpRank {
            rank,
            world,
            timeouts,
            link: Mutex::new((link, 0)),
            abort_streams,
            aborted: Mutex::new(None),
            last_ckpt: LastCheckpoint::default(),
        })
    }

    fn accept_all(world: usize, ep: &Endpoint, deadline: Instant, t: Timeouts) -> Result<Vec<Option<TcpStream>>> {
        let listener = TcpListener::bind(("0.0.0.0", ep.port)).map_err(|e| {
            Error::usage(format!(
                "rank 0 cannot listen on port {} for the attnas rendezvous ({e}). Under torchrun MASTER_PORT is the \
                 agent's own store and attnas uses MASTER_PORT+1; set ATTNAS_RDZV_PORT to a free port (the same on \
                 every rank)",
                ep.port
            ))
        })?;
        listener.set_nonblocking(true).map_err(|e| Error::Other(format!("rendezvous listener: {e}")))?;
        let mut peers: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
        let mut joined = 1;
        while joined < world {
            match listener.accept() {
                Ok((mut s, from)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_nodelay(true);
                    let hello_by = (Instant::now() + Duration::from_secs(10)).min(deadline.max(Instant::now()));
                    let Ok(f) = read_frame(&mut s, hello_by) else { continue }; // a stray connection
                    let Some((r, w)) = (f.kind == KIND_HELLO).then(|| parse_hello(&f.items)).flatten() else {
                        continue;
                    };
                    let refuse = if w != world {
                        Some(format!(
                            "rank {r} (from {from}) was started with WORLD_SIZE={w}, rank 0 with {world}: start every rank \
                             with the same WORLD_SIZE"
                        ))
                    } else if r == 0 || r >= world {
                        Some(format!("a process from {from} claims rank {r}; ranks 1..{} join rank 0", world - 1))
                    } else if peers[r].is_some() {
                        Some(format!(
                            "two processes claim rank {r} (the second from {from}): give each rank its own RANK"
                        ))
                    } else {
                        None
                    };
                    if let Some(msg) = refuse {
                        let _ = write_frame(&mut s, KIND_REFUSE, 0, &[msg.as_bytes()]);
                        return Err(Error::usage(msg));
                    }
                    peers[r] = Some(s);
                    joined += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing: Vec<String> =
                            (1..world).filter(|&r| peers[r].is_none()).map(|r| r.to_string()).collect();
                        return Err(Error::usage(format!(
                            "rank 0: rank {} did not join within {:.0} s (ATTNAS_RDZV_TIMEOUT): start every rank with the \
                             same MASTER_ADDR, MASTER_PORT and WORLD_SIZE={world}",
                            missing.join(", "),
                            t.rendezvous.as_secs_f64()
                        )));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(Error::Other(format!("rendezvous: accept failed: {e}"))),
            }
        }
        for s in peers.iter_mut().flatten() {
            write_frame(s, KIND_WELCOME, 0, &[]).map_err(|e| Error::Other(format!("rendezvous: welcome: {e}")))?;
        }
        Ok(peers)
    }

    fn join_hub(rank: usize, world: usize, ep: &Endpoint, deadline: Instant, t: Timeouts) -> Result<TcpStream> {
        let addrs = resolve(ep)?;
        let mut last_err = String::new();
        loop {
            for a in &addrs {
                match TcpStream::connect_timeout(a, Duration::from_secs(2)) {
                    Ok(s) if is_self_connection(&s) => {
                        // Nothing listens yet and the kernel gave this socket the very port it dials (a
                        // port in the ephemeral range): TCP's simultaneous open connected it to itself.
                        // Our own hello would come back as a stranger's; drop it and dial again.
                        last_err = "connection refused (nothing listening yet)".into();
                    }
                    Ok(mut s) => {
                        let _ = s.set_nodelay(true);
                        if let Err(e) = write_frame(&mut s, KIND_HELLO, 0, &[&hello_bytes(rank, world)]) {
                            last_err = e.to_string();
                            continue;
                        }
                        return match read_frame(&mut s, deadline) {
                            Ok(f) if f.kind == KIND_WELCOME => Ok(s),
                            Ok(f) if f.kind == KIND_REFUSE => Err(Error::usage(
                                String::from_utf8_lossy(f.items.first().map_or(&[][..], |v| v)).to_string(),
                            )),
                            Ok(_) | Err(ReadFail::Bad(_)) => Err(Error::usage(format!(
                                "{}:{} is not an attnas rendezvous (another service on that port?): set \
                                 ATTNAS_RDZV_PORT to a free port, the same on every rank",
                                ep.host, ep.port
                            ))),
                            Err(ReadFail::Closed) => Err(Error::usage(format!(
                                "rank 0 at {}:{} closed the rendezvous (it stopped: see its error)",
                                ep.host, ep.port
                            ))),
                            Err(ReadFail::TimedOut) => Err(Error::usage(format!(
                                "rank 0 at {}:{} did not gather all {world} ranks within {:.0} s (ATTNAS_RDZV_TIMEOUT)",
                                ep.host,
                                ep.port,
                                t.rendezvous.as_secs_f64()
                            ))),
                        };
                    }
                    Err(e) => last_err = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::usage(format!(
                    "rank {rank}: rank 0 unreachable at {}:{} for {:.0} s ({last_err}); check that rank 0 is running \
                     and that {} names its host (ATTNAS_RDZV_TIMEOUT sets the wait)",
                    ep.host,
                    ep.port,
                    t.rendezvous.as_secs_f64(),
                    ep.origin
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(&self, why: &str) -> Error {
        if let Ok(mut a) = self.aborted.lock() {
            if a.is_none() {
                *a = Some(why.to_string());
            }
        }
        Error::Other(format!("{why}; rank {} stops. {}", self.rank, self.last_ckpt.sentence()))
    }

    fn describe_fail(&self, who: usize, round: u64, f: ReadFail, waited: Duration) -> String {
        match f {
            ReadFail::Closed => format!("rank {who} closed its connection (its process died or exited)"),
            ReadFail::TimedOut => format!(
                "rank {who} did not reach collective #{round} within {:.0} s (dead or hung; ATTNAS_DIST_TIMEOUT sets the \
                 limit)",
                waited.as_secs_f64()
            ),
            ReadFail::Bad(e) => format!("rank {who}: broken message ({e})"),
        }
    }

    fn hub_gather(&self, peers: &mut [Option<TcpStream>], round: u64, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        let deadline = Instant::now() + self.timeouts.collective;
        let mut all = vec![mine.to_vec()];
        for r in 1..self.world {
            let s = peers[r].as_mut().ok_or_else(|| self.stop(&format!("rank {r} is gone")))?;
            let why = match read_frame(s, deadline) {
                Ok(f) if f.kind == KIND_DATA && f.round == round && f.items.len() == 1 => {
                    all.extend(f.items);
                    continue;
                }
                Ok(f) if f.kind == KIND_ABORT => {
                    format!("rank {r} stopped ({})", String::from_utf8_lossy(f.items.first().map_or(&[][..], |v| v)))
                }
                Ok(f) => format!("rank {r} is out of step (collective #{} instead of #{round})", f.round),
                Err(e) => self.describe_fail(r, round, e, self.timeouts.collective),
            };
            self.broadcast_abort(peers, Some(r), &why);
            return Err(self.stop(&why));
        }
        let items: Vec<&[u8]> = all.iter().map(|v| v.as_slice()).collect();
        for r in 1..self.world {
            if let Some(s) = peers[r].as_mut() {
                if write_frame(s, KIND_DATA, round, &items).is_err() {
                    let why = format!("rank {r} closed its connection (its process died or exited)");
                    self.broadcast_abort(peers, Some(r), &why);
                    return Err(self.stop(&why));
                }
            }
        }
        Ok(all)
    }

    fn broadcast_abort(&self, peers: &mut [Option<TcpStream>], skip: Option<usize>, why: &str) {
        for (r, s) in peers.iter_mut().enumerate() {
            if Some(r) == skip {
                continue;
            }
            if let Some(s) = s.as_mut() {
                let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = write_frame(s, KIND_ABORT, 0, &[why.as_bytes()]);
            }
        }
    }

    fn spoke_gather(&self, hub: &mut TcpStream, round: u64, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        if write_frame(hub, KIND_DATA, round, &[mine]).is_err() {
            return Err(self.stop("rank 0 closed its connection (its process died or exited)"));
        }
        let wait = self.timeouts.collective + SPOKE_GRACE;
        match read_frame(hub, Instant::now() + wait) {
            Ok(f) if f.kind == KIND_DATA && f.round == round && f.items.len() == self.world => Ok(f.items),
            Ok(f) if f.kind == KIND_ABORT => {
                Err(self.stop(&String::from_utf8_lossy(f.items.first().map_or(&[][..], |v| v))))
            }
            Ok(f) => Err(self.stop(&format!("rank 0 is out of step (collective #{} instead of #{round})", f.round))),
            Err(e) => Err(self.stop(&self.describe_fail(0, round, e, wait))),
        }
    }
}

impl RankContext for TcpRank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
}

impl HostCollectives for TcpRank {
    fn all_gather_bytes(&self, mine: &[u8]) -> Result<Vec<Vec<u8>>> {
        if let Some(why) = self.aborted.lock().ok().and_then(|a| a.clone()) {
            return Err(Error::Other(format!("{why}; rank {} stops. {}", self.rank, self.last_ckpt.sentence())));
        }
        let mut guard = self.link.lock().map_err(|_| Error::Other("tcp ranks: poisoned".into()))?;
        let (link, calls) = &mut *guard;
        let round = *calls;
        *calls += 1;
        match link {
            Link::Hub(peers) => self.hub_gather(peers, round, mine),
            Link::Spoke(hub) => self.spoke_gather(hub, round, mine),
        }
    }

    fn barrier(&self) -> Result<()> {
        self.all_gather_bytes(&[]).map(|_| ())
    }

    fn abort(&self, reason: &str) {
        let why = format!("rank {} stopped ({reason})", self.rank);
        if let Ok(mut a) = self.aborted.lock() {
            if a.is_some() {
                return; // already failing: the others have been told, or told us
            }
            *a = Some(why.clone());
        }
        for s in &self.abort_streams {
            let mut s = match s.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            };
            let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
            let _ = write_frame(&mut s, KIND_ABORT, 0, &[why.as_bytes()]);
            // Unblocks a collective this process may be stuck in on another thread.
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn note_checkpoint(&self, path: &str) {
        self.last_ckpt.set(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::ReduceOp;

    /// A socket bound to port P and dialling 127.0.0.1:P: the self-connection the rendezvous must not
    /// mistake for rank 0 (made here on purpose, as the kernel may make it by chance).
    #[test]
    fn a_self_connected_socket_is_recognised() {
        use std::os::fd::FromRawFd;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be() },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: a fresh socket; `addr` is a valid sockaddr_in of `len` bytes for bind and connect.
        let stream = unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0);
            let sa = &addr as *const libc::sockaddr_in as *const libc::sockaddr;
            assert_eq!(libc::bind(fd, sa, len), 0, "bind 127.0.0.1:{port}");
            assert_eq!(libc::connect(fd, sa, len), 0, "self-connect to 127.0.0.1:{port}");
            TcpStream::from_raw_fd(fd)
        };
        assert!(is_self_connection(&stream));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(!is_self_connection(&other));
    }

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn ep(port: u16) -> Endpoint {
        Endpoint { host: "127.0.0.1".into(), port, origin: "MASTER_ADDR".into() }
    }

    fn quick() -> Timeouts {
        Timeouts { collective: Duration::from_secs(2), rendezvous: Duration::from_secs(5) }
    }

    #[test]
    fn three_ranks_gather_and_reduce_over_loopback() {
        let port = free_port();
        let handles: Vec<_> = (0..3)
            .map(|rank| {
                std::thread::spawn(move || {
                    let r = TcpRank::connect(rank, 3, &ep(port), quick()).unwrap();
                    let all = r.all_gather_bytes(&vec![rank as u8; rank + 2]).unwrap();
                    let mut v = vec![rank as f32 + 0.5, -1.0];
                    r.all_reduce_f32(&mut v, ReduceOp::Sum).unwrap();
                    let id = r.broadcast_bytes(0, b"nccl-unique-id").unwrap();
                    r.barrier().unwrap();
                    (all, v, id)
                })
            })
            .collect();
        for h in handles {
            let (all, v, id) = h.join().unwrap();
            assert_eq!(all, vec![vec![0u8; 2], vec![1u8; 3], vec![2u8; 4]]);
            assert_eq!(v, vec![4.5, -3.0]);
            assert_eq!(id, b"nccl-unique-id");
        }
    }

    #[test]
    fn a_rank_that_disappears_is_named_at_once() {
        let port = free_port();
        let spoke = std::thread::spawn(move || {
            let r = TcpRank::connect(1, 2, &ep(port), Timeouts::default()).unwrap();
            r.barrier().unwrap();
            drop(r); // the process "dies": its socket closes
        });
        let hub = TcpRank::connect(0, 2, &ep(port), Timeouts::default()).unwrap();
        hub.note_checkpoint("runs/x/ckpt-000000012.safetensors");
        hub.barrier().unwrap();
        spoke.join().unwrap();
        let t = Instant::now();
        let e = hub.barrier().unwrap_err().to_string();
        assert!(t.elapsed() < Duration::from_secs(10), "not the 90 s timeout: {:?}", t.elapsed());
        assert!(e.contains("rank 1 closed its connection"), "{e}");
        assert!(e.contains("Last good checkpoint: runs/x/ckpt-000000012.safetensors"), "{e}");
    }

    #[test]
    fn a_hung_rank_is_named_after_the_timeout_and_the_others_hear_of_it() {
        let port = free_port();
        let t = quick();
        let r2 = std::thread::spawn(move || {
            let r = TcpRank::connect(2, 3, &ep(port), t).unwrap();
            std::thread::sleep(Duration::from_secs(4)); // hung past the 2 s timeout
            drop(r);
        });
        let r1 = std::thread::spawn(move || TcpRank::connect(1, 3, &ep(port), t).unwrap().barrier());
        let hub = TcpRank::connect(0, 3, &ep(port), t).unwrap();
        let e0 = hub.barrier().unwrap_err().to_string();
        let e1 = r1.join().unwrap().unwrap_err().to_string();
        assert!(e0.contains("rank 2 did not reach collective #0 within 2 s"), "{e0}");
        assert!(e1.contains("rank 2 did not reach"), "rank 1 hears it from rank 0: {e1}");
        r2.join().unwrap();
    }

    #[test]
    fn bad_launches_are_one_line_usage_errors() {
        // rank 0 unreachable: a bounded wait
        let t = Timeouts { collective: Duration::from_secs(1), rendezvous: Duration::from_millis(600) };
        let e = TcpRank::connect(1, 2, &ep(free_port()), t).err().unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().contains("rank 0 unreachable"), "{e}");
        // an unresolvable host names the variable
        let bad = Endpoint { host: "no-such-host.invalid".into(), port: 1, origin: "MASTER_ADDR".into() };
        let e = TcpRank::connect(1, 2, &bad, t).err().unwrap();
        assert!(e.to_string().starts_with("MASTER_ADDR=no-such-host.invalid does not resolve"), "{e}");
        // rank out of range
        assert_eq!(TcpRank::connect(2, 2, &ep(1), t).err().unwrap().exit_code(), 2);
        // another world size is refused by rank 0, naming both
        let port = free_port();
        let other = std::thread::spawn(move || TcpRank::connect(1, 3, &ep(port), t).err().unwrap().to_string());
        let e = TcpRank::connect(0, 2, &ep(port), Timeouts { rendezvous: Duration::from_secs(5), ..t }).err().unwrap();
        assert!(e.to_string().contains("WORLD_SIZE=3"), "{e}");
        assert!(other.join().unwrap().contains("WORLD_SIZE"));
        // nobody joins rank 0: it names the missing ranks
        let e = TcpRank::connect(0, 3, &ep(free_port()), t).err().unwrap();
        assert!(e.to_string().contains("rank 1, 2 did not join"), "{e}");
    }

    #[test]
    fn an_abort_reaches_the_other_ranks() {
        let port = free_port();
        let spoke = std::thread::spawn(move || {
            let r = TcpRank::connect(1, 2, &ep(port), Timeouts::default()).unwrap();
            r.abort("cannot read the data");
        });
        let hub = TcpRank::connect(0, 2, &ep(port), Timeouts::default()).unwrap();
        spoke.join().unwrap();
        let e = hub.barrier().unwrap_err().to_string();
        assert!(e.contains("rank 1 stopped (cannot read the data)"), "{e}");
    }
}
