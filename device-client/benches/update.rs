//! Update throughput from a local source and peak memory, against the physical limits
//! measured in the same run.
//!
//! A 1 GiB artifact (override with `OTA_BENCH_MIB`) is cut and indexed as the origin would;
//! then a child process (so that its peak RSS is the update's alone) writes it into the
//! inactive slot with `ota_device::download` from the active slot as its main source: every
//! chunk read, verified against its id, written at its offsets (synced and journalled every
//! `JOURNAL_BYTES` or `JOURNAL_INTERVAL`), and the whole artifact hashed (SHA-256 and BLAKE3)
//! as written and checked against its signed hashes. A LAN peer on loopback QUIC
//! (in the child, serving the same file) is also a source, as network sources always are on a
//! device; the scheduler prefers the local slot, so the peer only gets what is left at the end.
//! The inactive slot is a file that holds an older image, written over in place, as a
//! device's slots are from one update to the next.
//!
//! The limits: raw BLAKE3 on one thread over memory (the per-chunk check the device does), and
//! raw sequential write speed over a file of the same length on the same file system, in
//! place, with the device's sync policy (synced every `JOURNAL_BYTES` or `JOURNAL_INTERVAL` on
//! a thread of its own while the writes go on, and at the end). Targets: throughput at least
//! 0.8 × the slower limit; peak RSS under 64 MiB.
//!
//! The bench runs `OTA_BENCH_ROUNDS` rounds (5 by default): the limits are measured before
//! the first update and after each, and each update is compared with the faster of the
//! limits measured just before and just after it. Every round is printed, then the round of
//! median ratio in detail; the verdict is that median's, with the number of rounds that met
//! the target.
//!
//! Also printed, as the ratio depends on what else the machine runs and on how many cores it
//! has: raw SHA-256 on one thread (the whole artifact's SHA-256 is a single sequential pass,
//! and the slot is marked pending only once it matched: no update can be faster, on any number
//! of cores, and the bench says when that bound alone puts the target out of reach),
//! the CPU the update must spend per GiB and what that allows on this machine's cores with
//! every core busy all the time; the update's CPU per GiB and the cores it kept busy, and per
//! thread (by name, from `/proc/self/task/*/schedstat`) the seconds per GiB it spent on a CPU,
//! waiting for one, and asleep (waiting on a queue, a lock or the disk). With
//! `OTA_BENCH_WAITS` set, the child also counts each thread's state and kernel wait channel
//! every 20 ms and prints them on stderr.
//!
//! Run: `cargo bench -p ota-device --bench update`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use ota_core::chunk::{ArtifactChunks, ChunkVerifier, ChunkingParams, Ingest};
use ota_core::digest::Sha256Hash;
use ota_core::fetch::{Config, SourceId, SourceKind};
use ota_core::tuf::testkit::assume_verified;
use ota_device::download::{self, Job, Sources};
use ota_device::progress::Progress;
use ota_device::source::{LocalChunks, QuicLink, Source, Transport};
use serde::{Deserialize, Serialize};

const PIECE: usize = 4 << 20;
/// The name of the child's thread that samples the others' CPU.
const SAMPLER: &str = "bench-sampler";

#[derive(Serialize, Deserialize)]
struct Prepared {
    length: u64,
    sha256: Sha256Hash,
    chunks: ArtifactChunks,
}

fn main() {
    if let Some(dir) = std::env::var_os("OTA_BENCH_CHILD") {
        child(Path::new(&dir));
        return;
    }
    let mib: u64 = std::env::var("OTA_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let len = mib << 20;
    let dir = tempfile::Builder::new()
        .prefix("ota-device-bench")
        .tempdir_in(
            std::env::var_os("OTA_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from),
        )
        .unwrap();

    // The artifact, cut and indexed (the old slot holds it: a local source for every chunk).
    let mut ingest = Ingest::new_parallel(ChunkingParams::DEFAULT);
    write_image(
        &dir.path().join("active.img"),
        len,
        b"bench image",
        |piece| {
            ingest
                .update(piece, |_| Ok::<(), std::convert::Infallible>(()))
                .unwrap();
        },
    );
    let ingested = ingest
        .finish(|_| Ok::<(), std::convert::Infallible>(()))
        .unwrap();
    std::fs::write(dir.path().join("index"), &ingested.index).unwrap();
    // The inactive slot, and the file the raw write goes to, hold an older image of the same
    // length: as on a device, whose slots are files written over in place from one update to
    // the next. (Writing into new files instead made every round allocate a fresh GiB of
    // page cache, at a cost that varied from round to round with what the machine's host
    // did with the memory freed by the round before.)
    for name in ["inactive.img", "raw-write"] {
        write_image(&dir.path().join(name), len, b"older image", |_| {});
    }
    std::fs::write(
        dir.path().join("prepared.json"),
        serde_json::to_vec(&Prepared {
            length: ingested.length,
            sha256: ingested.sha256,
            chunks: ingested.chunks.clone(),
        })
        .unwrap(),
    )
    .unwrap();

    let rounds: usize = std::env::var("OTA_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(5);
    // Rounds of limits and update in turn: the limits are measured before the first update
    // and after each, and each update is compared with the faster of the limits measured just
    // before and just after it (a load spike on the shared machine during one measurement
    // does not lower the bar).
    let mut limits_seen = vec![limits(dir.path(), len)];
    let mut runs = Vec::new();
    for _ in 0..rounds {
        let run = update_in_child(dir.path());
        limits_seen.push(limits(dir.path(), len));
        runs.push(run);
    }
    let mib_s = |r: f64| r / f64::from(1 << 20);
    let mut measured: Vec<Round> = runs
        .into_iter()
        .enumerate()
        .map(|(i, result)| {
            let (before, after) = (&limits_seen[i], &limits_seen[i + 1]);
            let blake3_rate = before.blake3.max(after.blake3);
            let write_rate = before.write.max(after.write);
            let sha256_rate = before.sha256.max(after.sha256);
            let secs = result["secs"].as_f64().unwrap();
            let rate = len as f64 / secs;
            Round {
                n: i + 1,
                rate,
                blake3_rate,
                write_rate,
                sha256_rate,
                ratio: rate / blake3_rate.min(write_rate),
                result,
            }
        })
        .collect();
    println!(
        "update of a {mib} MiB artifact from the local slot (every chunk read, verified, written, journalled; whole artifact hashed as written and checked), {rounds} rounds:"
    );
    for r in &measured {
        println!(
            "  round {}: {:7.1} MiB/s against raw write {:7.1} MiB/s and raw BLAKE3 {:7.1} MiB/s: ratio {:.2}; CPU {:.2} s/GiB, machine idle {:.2} cores",
            r.n,
            mib_s(r.rate),
            mib_s(r.write_rate),
            mib_s(r.blake3_rate),
            r.ratio,
            r.result["cpu_secs"].as_f64().unwrap_or(f64::NAN) * f64::from(1 << 30) / len as f64,
            r.result["machine_ticks"][1].as_f64().unwrap_or(f64::NAN)
                / 100.0
                / r.result["secs"].as_f64().unwrap_or(f64::NAN),
        );
    }
    let peak = measured
        .iter()
        .filter_map(|r| r.result["peak_rss"].as_u64())
        .max()
        .unwrap_or(0);
    // The round of median ratio, in detail.
    measured.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
    let met = measured.iter().filter(|r| r.ratio >= 0.8).count();
    let median = measured.swap_remove(measured.len() / 2);
    let Round {
        n,
        rate,
        blake3_rate,
        write_rate,
        sha256_rate,
        ratio,
        result,
    } = median;
    let secs = result["secs"].as_f64().unwrap();
    let from_slot = result["from_slot"].as_u64().unwrap_or(0);
    let cpu = result["cpu_secs"].as_f64();
    let threads = result["threads"].as_object().cloned().unwrap_or_default();
    let machine = result["machine_ticks"]
        .as_array()
        .and_then(|t| Some((t.first()?.as_f64()?, t.get(1)?.as_f64()?)));
    println!("the round of median ratio (round {n}):");
    println!(
        "  throughput       {:8.1} MiB/s ({:.1} % of the bytes from the slot)",
        mib_s(rate),
        100.0 * from_slot as f64 / len as f64
    );
    if let Some(cpu) = cpu {
        println!(
            "  update CPU       {cpu:8.1} s user+sys ({:.2} cores busy on average; the machine's load: /proc/loadavg {})",
            cpu / secs,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if let Some((busy, idle)) = machine {
        // What the whole machine did meanwhile: with the update's own CPU, whether anything
        // else ran, and how much of the machine stayed idle.
        println!(
            "  machine CPU      {:8.2} cores busy of {} during the update (the update's: {:.2}; idle {:.2})",
            busy / 100.0 / secs,
            std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            cpu.unwrap_or(0.0) / secs,
            idle / 100.0 / secs,
        );
    }
    if let Some(cpu) = cpu {
        // Where the time went, by thread name, in seconds per GiB: on a CPU, waiting for one
        // (the machine is busy), and the rest of the update's time asleep (waiting on a
        // queue, a lock or the disk). Threads that ended between two samples are under
        // "ended" (CPU only).
        let gib = len as f64 / f64::from(1 << 30);
        let mut named: Vec<(String, f64, f64)> = threads
            .iter()
            .filter_map(|(name, t)| Some((name.clone(), t[0].as_f64()?, t[1].as_f64()?)))
            .collect();
        named.sort_by(|a, b| b.1.total_cmp(&a.1));
        let sampled: f64 = named.iter().map(|(_, s, _)| s).sum();
        let mut list: Vec<String> = named
            .iter()
            .map(|(name, on, wait)| {
                format!(
                    "{name} {:.2}/{:.2}/{:.2}",
                    on / gib,
                    wait / gib,
                    (secs - on - wait).max(0.0) / gib
                )
            })
            .collect();
        list.push(format!("ended {:.2}", (cpu - sampled).max(0.0) / gib));
        println!(
            "  CPU per GiB      {:8.2} s; by thread, s/GiB on a CPU/waiting for one/asleep: {}",
            cpu / gib,
            list.join(", ")
        );
    }
    println!(
        "  raw BLAKE3       {:8.1} MiB/s (one thread; the faster of before and after this round's update)",
        mib_s(blake3_rate)
    );
    println!(
        "  raw write        {:8.1} MiB/s (sequential, synced every {} MiB or {} ms as the device; the faster of before and after this round's update)",
        mib_s(write_rate),
        download::JOURNAL_BYTES >> 20,
        download::JOURNAL_INTERVAL.as_millis()
    );
    // Context, not a target: what the machine's cores allow. The update hashes every byte
    // three times (BLAKE3 as each chunk is checked, BLAKE3 and SHA-256 of the whole artifact);
    // with its two copies (read, write) and its system calls it took `cpu` CPU-seconds. The
    // kernel's writeback threads, which write the dirty pages out to the disk, come on top:
    // the machine's CPU during the update counts them (and anything else that ran).
    let gib = len as f64 / f64::from(1 << 30);
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get) as f64;
    let hashing = f64::from(1 << 30) * (2.0 / blake3_rate + 1.0 / sha256_rate);
    println!(
        "  raw SHA-256      {:8.1} MiB/s (one thread; context: SHA-256 cannot be split over threads)",
        mib_s(sha256_rate)
    );
    // A bound on any implementation, whatever the cores: the slot is marked pending only
    // after the signed SHA-256 of every byte matched, and SHA-256 is one sequential pass
    // (each block's input is the state after the one before), so no update is faster than
    // one thread's raw SHA-256.
    let sha256_bound = sha256_rate / blake3_rate.min(write_rate);
    println!(
        "  SHA-256 bound    {:8.1} MiB/s at most for any update ({sha256_bound:.2} of the slower limit: the whole artifact's SHA-256 is one sequential pass){}",
        mib_s(sha256_rate),
        if sha256_bound < 0.8 {
            ": the target is beyond any implementation on this machine"
        } else {
            ""
        }
    );
    if let Some(cpu) = cpu {
        let slower = mib_s(blake3_rate.min(write_rate));
        let cpu_per_gib = cpu / gib;
        let bound = 1024.0 * cores / cpu_per_gib;
        let of_limit = bound / slower;
        // With the writeback: the machine's busy CPU per GiB, if it is more than the update's.
        let machine_bound = machine
            .map(|(busy, _)| busy / 100.0 / gib)
            .filter(|&per_gib| per_gib > cpu_per_gib)
            .map(|per_gib| (per_gib, 1024.0 * cores / per_gib));
        let tightest = machine_bound.map_or(of_limit, |(_, b)| b / slower);
        println!(
            "  CPU bound        hashing alone {hashing:.2} CPU-s/GiB at the raw rates; the whole update {cpu_per_gib:.2} CPU-s/GiB: on {cores} cores, even with every core busy all the time, at most {bound:.1} MiB/s ({of_limit:.2} of the slower limit){}{}",
            machine_bound.map_or(String::new(), |(per_gib, b)| format!(
                "; {per_gib:.2} CPU-s/GiB with the kernel's writeback (the machine's CPU during the update): at most {b:.1} MiB/s ({:.2})",
                b / slower
            )),
            if tightest < 0.8 {
                ": the target is beyond these cores"
            } else {
                ""
            }
        );
    }
    println!(
        "  ratio            {ratio:8.2} of the slower limit, the median of {rounds} rounds (target >= 0.80): {}; met in {met} of {rounds} rounds",
        if ratio >= 0.8 { "met" } else { "NOT met" }
    );
    println!(
        "  peak RSS         {:8.1} MiB, the highest of {rounds} rounds (target < 64 MiB): {}",
        peak as f64 / f64::from(1 << 20),
        if peak > 0 && peak < 64 << 20 {
            "met"
        } else {
            "NOT met"
        }
    );
}

/// Write `len` pseudo-random bytes drawn from `seed` to a new file at `path`, synced, handing
/// each piece to `each` as well.
fn write_image(path: &Path, len: u64, seed: &[u8], mut each: impl FnMut(&[u8])) {
    let mut file = std::fs::File::create(path).unwrap();
    let mut piece = vec![0u8; PIECE];
    let mut xof = blake3::Hasher::new().update(seed).finalize_xof();
    let mut written = 0u64;
    while written < len {
        let n = (len - written).min(PIECE as u64) as usize;
        xof.fill(&mut piece[..n]);
        file.write_all(&piece[..n]).unwrap();
        each(&piece[..n]);
        written += n as u64;
    }
    file.sync_all().unwrap();
}

/// One round's update and the limits it is compared with.
struct Round {
    n: usize,
    rate: f64,
    blake3_rate: f64,
    write_rate: f64,
    sha256_rate: f64,
    ratio: f64,
    result: serde_json::Value,
}

/// Run the update in a child process (so that its peak RSS is the update's alone); its report.
fn update_in_child(dir: &Path) -> serde_json::Value {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .env("OTA_BENCH_CHILD", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the update failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if std::env::var_os("OTA_BENCH_WAITS").is_some() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    // The next round writes the whole slot again (over the same file, in place).
    std::fs::remove_file(dir.join("journal")).unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn child(dir: &Path) {
    let prepared: Prepared =
        serde_json::from_slice(&std::fs::read(dir.join("prepared.json")).unwrap()).unwrap();
    let index = std::fs::read(dir.join("index")).unwrap();
    let artifact = assume_verified(
        "artifacts/bench.img",
        prepared.length,
        prepared.sha256,
        prepared.chunks,
    );
    let verifier = ChunkVerifier::new(&artifact, &index).unwrap();
    drop(index);
    let mut local = LocalChunks::default();
    local
        .files
        .push(std::fs::File::open(dir.join("active.img")).unwrap());
    let mut holdings = HashSet::new();
    for entry in verifier.index().entries() {
        local
            .chunks
            .entry(*entry.id())
            .or_insert((0, entry.offset(), entry.len()));
        holdings.insert(*entry.id());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let local = Arc::new(local);
    let identity =
        ota_net::quic::Identity::from_node_key(&ota_net::quic::NodeKey::generate()).unwrap();
    let server = {
        let _guard = runtime.enter();
        ota_net::server::Server::bind(
            "127.0.0.1:0".parse().unwrap(),
            &identity,
            ota_net::server::ServerConfig::default(),
            SlotPeer(local.clone()),
        )
        .unwrap()
    };
    let peer = runtime
        .block_on(ota_net::client::Client::connect(
            server.local_addr(),
            server.pin(),
        ))
        .unwrap();
    let mut sources = Sources::new(
        vec![
            Source {
                id: SourceId(0),
                kind: SourceKind::LocalSlot,
                name: "local slot".into(),
                transport: Transport::Local(local),
            },
            Source {
                id: SourceId(1),
                kind: SourceKind::LanPeer,
                name: "peer".into(),
                transport: Transport::Quic(QuicLink::new(peer, server.pin())),
            },
        ],
        holdings,
    );
    let job = Job {
        artifact: &artifact,
        verifier: &verifier,
        slot_file: dir.join("inactive.img"),
        journal_file: dir.join("journal"),
    };
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        // Named, so that its own CPU is left out of the update's.
        std::thread::Builder::new()
            .name(SAMPLER.into())
            .spawn(move || {
                let mut seen = std::collections::HashMap::new();
                let mut waits = std::collections::BTreeMap::new();
                let look = std::env::var_os("OTA_BENCH_WAITS").is_some();
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    thread_cpu(&mut seen);
                    if look {
                        thread_waits(&mut waits);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                thread_cpu(&mut seen);
                if look {
                    for ((name, state, wchan), n) in &waits {
                        eprintln!("wait {name} {state} {wchan} {n}");
                    }
                }
                seen
            })
            .unwrap()
    };
    let threads_before = {
        let mut seen = std::collections::HashMap::new();
        thread_cpu(&mut seen);
        seen
    };
    let cpu_before = cpu_secs();
    let machine_before = machine_ticks();
    let start = Instant::now();
    let report = runtime
        .block_on(download::download(
            &job,
            &mut sources,
            Config::default(),
            &Progress::quiet(),
        ))
        .unwrap();
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_secs().map(|before_after| before_after - cpu_before.unwrap_or(0.0));
    let machine = machine_ticks()
        .zip(machine_before)
        .map(|(after, before)| [after[0] - before[0], after[1] - before[1]]);
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let sampled = sampler.join().unwrap();
    // The sampler's own CPU is not the update's.
    let sampler_cpu: f64 = sampled
        .iter()
        .filter(|(_, (name, _, _))| name == SAMPLER)
        .map(|(tid, (_, on, _))| (on - threads_before.get(tid).map_or(0, |t| t.1)) as f64 / 1e9)
        .sum();
    let cpu = cpu.map(|cpu| (cpu - sampler_cpu).max(0.0));
    // Per thread name: seconds on a CPU and waiting for one, during the update.
    let mut threads: std::collections::BTreeMap<String, [f64; 2]> =
        std::collections::BTreeMap::new();
    for (tid, (name, on, wait)) in sampled {
        if name == SAMPLER {
            continue;
        }
        let (on0, wait0) = threads_before
            .get(&tid)
            .map_or((0, 0), |(_, on, wait)| (*on, *wait));
        let t = threads.entry(name).or_default();
        t[0] += (on - on0) as f64 / 1e9;
        t[1] += (wait - wait0) as f64 / 1e9;
    }
    threads.retain(|name, t| t[0] > 0.0 && !name.starts_with("tokio") || t[0] > 0.01);
    let from_slot = report.bytes_by_kind.get(&SourceKind::LocalSlot).copied();
    let from_peer = report.bytes_by_kind.get(&SourceKind::LanPeer).copied();
    assert_eq!(
        from_slot.unwrap_or(0) + from_peer.unwrap_or(0),
        prepared.length
    );
    println!(
        "{}",
        serde_json::json!({
            "secs": secs, "peak_rss": ota_device::update::peak_rss(),
            "from_slot": from_slot, "duplicate_bytes": report.duplicate_bytes, "cpu_secs": cpu,
            "threads": threads, "machine_ticks": machine,
        })
    );
    drop(server);
}

/// The physical limits, in bytes per second: BLAKE3 on one thread over memory, and a
/// sequential write of `len` bytes to a file in `dir` synced as the device syncs.
fn limits(dir: &Path, len: u64) -> Limits {
    let buffer = {
        let mut b = vec![0u8; 16 << 20];
        blake3::Hasher::new()
            .update(b"limit")
            .finalize_xof()
            .fill(&mut b);
        b
    };
    let start = Instant::now();
    let mut hashed = 0u64;
    while hashed < len {
        let n = (len - hashed).min(buffer.len() as u64) as usize;
        std::hint::black_box(blake3::hash(&buffer[..n]));
        hashed += n as u64;
    }
    let blake3_rate = len as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut hashed = 0u64;
    let mut sha256 = <sha2::Sha256 as sha2::Digest>::new();
    while hashed < len {
        let n = (len - hashed).min(buffer.len() as u64) as usize;
        sha2::Digest::update(&mut sha256, &buffer[..n]);
        hashed += n as u64;
    }
    std::hint::black_box(sha2::Digest::finalize(sha256));
    let sha256_rate = len as f64 / start.elapsed().as_secs_f64();
    let raw_path = dir.join("raw-write");
    let start = Instant::now();
    // Written over in place, as the update writes its slot.
    let mut raw = std::fs::OpenOptions::new()
        .write(true)
        .open(&raw_path)
        .unwrap();
    // As the device: a sync thread syncs every JOURNAL_BYTES (or JOURNAL_INTERVAL) while the
    // writes go on, one sync waiting at most (beyond, the next sync covers more).
    let (syncs, to_sync) = std::sync::mpsc::sync_channel::<()>(1);
    let syncing = raw.try_clone().unwrap();
    let syncer = std::thread::spawn(move || {
        for () in to_sync {
            syncing.sync_data().unwrap();
        }
    });
    let mut done = 0u64;
    let (mut unsynced, mut synced_at) = (0u64, Instant::now());
    while done < len {
        let n = (len - done).min(PIECE as u64) as usize;
        raw.write_all(&buffer[..n]).unwrap();
        done += n as u64;
        unsynced += n as u64;
        // A sync already waiting covers these writes too: try again after the next piece.
        if (unsynced >= download::JOURNAL_BYTES
            || synced_at.elapsed() >= download::JOURNAL_INTERVAL)
            && syncs.try_send(()).is_ok()
        {
            (unsynced, synced_at) = (0, Instant::now());
        }
    }
    drop(syncs);
    syncer.join().unwrap();
    raw.sync_all().unwrap();
    let write_rate = len as f64 / start.elapsed().as_secs_f64();
    drop(raw);
    Limits {
        blake3: blake3_rate,
        sha256: sha256_rate,
        write: write_rate,
    }
}

/// The limits measured once, in bytes per second.
struct Limits {
    /// BLAKE3 on one thread over memory.
    blake3: f64,
    /// SHA-256 on one thread over memory (context: not a target's limit).
    sha256: f64,
    /// Sequential write, synced as the device syncs.
    write: f64,
}

/// CPU time (user and system, every thread) this process used so far, from `/proc/self/stat`
/// (in clock ticks of 1/100 s, as on Linux).
fn cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// The machine's CPU ticks so far (every CPU, 1/100 s): [busy, idle] from `/proc/stat`
/// (busy: user, nice, system, irq, softirq, steal; idle: idle and iowait).
fn machine_ticks() -> Option<[u64; 2]> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let busy = f.get(0..3)?.iter().sum::<u64>() + f.get(5..8)?.iter().sum::<u64>();
    Some([busy, f.get(3..5)?.iter().sum()])
}

/// Record, per thread of this process (by id), its name, the nanoseconds it ran on a CPU
/// and those it waited for one so far, from `/proc/self/task/*/{comm,schedstat}`.
fn thread_cpu(seen: &mut std::collections::HashMap<u64, (String, u64, u64)>) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(task.path().join("comm")),
            std::fs::read_to_string(task.path().join("schedstat")),
        ) else {
            continue;
        };
        let mut fields = stat.split_whitespace().map(|f| f.parse::<u64>().ok());
        if let (Some(Some(on)), Some(Some(wait))) = (fields.next(), fields.next()) {
            seen.insert(tid, (name.trim().to_string(), on, wait));
        }
    }
}

/// With `OTA_BENCH_WAITS` set: count, per thread name, each state and kernel wait channel
/// seen (`/proc/self/task/*/{stat,wchan}`), printed on stderr at the end.
fn thread_waits(waits: &mut std::collections::BTreeMap<(String, String, String), u64>) {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for task in tasks.flatten() {
        let (Ok(stat), Ok(wchan)) = (
            std::fs::read_to_string(task.path().join("stat")),
            std::fs::read_to_string(task.path().join("wchan")),
        ) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let state = stat[close + 2..].chars().next().unwrap_or('?').to_string();
        *waits.entry((name, state, wchan)).or_default() += 1;
    }
}

/// The bench's LAN peer: serves chunks of the active slot.
struct SlotPeer(Arc<LocalChunks>);

impl ota_net::server::Handler for SlotPeer {
    async fn challenge(
        &self,
        _conn: &ota_net::server::ConnInfo,
    ) -> Result<ota_net::proto::Nonce, ota_net::proto::Refusal> {
        Err(ota_net::proto::Refusal::new(501, "no"))
    }

    async fn signed(
        &self,
        _conn: &ota_net::server::ConnInfo,
        _kind: ota_net::proto::SignedKind,
        _request: ota_net::proto::SignedRequest,
    ) -> Result<Vec<u8>, ota_net::proto::Refusal> {
        Err(ota_net::proto::Refusal::new(501, "no"))
    }

    async fn metadata(
        &self,
        _conn: &ota_net::server::ConnInfo,
        _name: &str,
    ) -> Option<bytes::Bytes> {
        None
    }

    async fn blob(
        &self,
        _conn: &ota_net::server::ConnInfo,
        id: &ota_core::digest::ChunkId,
    ) -> Option<bytes::Bytes> {
        self.0.read(id).map(bytes::Bytes::from)
    }
}
