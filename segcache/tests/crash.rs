//! Crash safety of `SegmentStore`: writers run in a child process (this test binary run again,
//! as the `crash_child` test with `SEGCACHE_CRASH_DIR` set), which is killed with SIGKILL at a
//! random point, many times. After each kill the cache is reopened and checked: no temporary
//! file survives the scan, no torn segment is ever served (every segment's bytes follow from
//! its id), and every segment whose `put` returned (the child logs each one, with an fsync,
//! after `put` returns) is cached or downloadable. The remote is an S3 server run by this
//! process (or the test matrix's, from the environment), so it outlives the child.

mod store_support;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt as _;
use objsync::testing::{S3Server, TestS3};
use segcache::{CacheConfig, PersistMode, SegmentStore};
use store_support::{exact_config, id, segment};

/// Kill rounds.
const ROUNDS: u64 = 40;
/// Writer tasks in the child.
const WRITERS: u64 = 3;
/// Segments are 1 byte to this long.
const MAX_LEN: usize = 64 << 10;
/// A cache small enough that the child evicts as it writes.
const BUDGET: u64 = 1 << 20;
/// Earlier rounds' acknowledged segments checked again after each round (all are checked at
/// the end).
const SAMPLE: usize = 16;

const DIR_VAR: &str = "SEGCACHE_CRASH_DIR";
const LOG_VAR: &str = "SEGCACHE_CRASH_LOG";
const ROUND_VAR: &str = "SEGCACHE_CRASH_ROUND";
const PREFIX_VAR: &str = "SEGCACHE_CRASH_PREFIX";
const PERSIST_VAR: &str = "SEGCACHE_CRASH_PERSIST";
/// A file the child creates once its store is open.
const READY_VAR: &str = "SEGCACHE_CRASH_READY";

/// The id of the `seq`th segment of writer `writer` in round `round`: unique across rounds, so
/// that the remote, which outlives every child, never sees one id with two contents.
fn segment_n(round: u64, writer: u64, seq: u64) -> u128 {
    (u128::from(round) << 64) | (u128::from(writer) << 48) | u128::from(seq)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn cache_config(dir: &Path, persist: PersistMode) -> CacheConfig {
    CacheConfig::new(dir)
        .with_max_bytes(BUDGET)
        .with_persist_mode(persist)
}

/// Puts segments from `WRITERS` tasks, appending each id to `log` (and syncing it) once its
/// `put` has returned. Also re-puts and reads back its own earlier segments now and then. With
/// a `limit`, each writer stops after that many segments; without one, it runs until killed.
async fn write_segments(store: SegmentStore, round: u64, log: File, limit: Option<u64>) {
    let log = Arc::new(Mutex::new(log));
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let (store, log) = (store.clone(), Arc::clone(&log));
            tokio::spawn(async move {
                let mut seq = 0;
                while limit.is_none_or(|limit| seq < limit) {
                    let n = segment_n(round, writer, seq);
                    drop(store.put(id(n), segment(n, MAX_LEN)).await.unwrap());
                    {
                        let mut log = log.lock().unwrap();
                        log.write_all(format!("{n:032x}\n").as_bytes()).unwrap();
                        log.sync_data().unwrap();
                    }
                    if seq % 4 == 3 {
                        // An earlier segment again: already stored, maybe still cached.
                        let old = segment_n(round, writer, seq / 2);
                        drop(store.put(id(old), segment(old, MAX_LEN)).await.unwrap());
                        let got = store.get(id(old)).await.unwrap();
                        assert!(got[..] == segment(old, MAX_LEN)[..], "segment {old:x}");
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
}

/// The child's side (with `SEGCACHE_CRASH_DIR` set): opens the store and writes until killed.
/// Without the variable, a check of the writer itself, in process: a bounded run logs exactly
/// the segments it put, and they read back.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(DIR_VAR) else {
        return writer_logs_what_it_put();
    };
    let var = |name| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
    let round: u64 = var(ROUND_VAR).parse().unwrap();
    let persist = match var(PERSIST_VAR).as_str() {
        "rename" => PersistMode::RenameNoReplace,
        _ => PersistMode::Auto,
    };
    let log = OpenOptions::new()
        .append(true)
        .create(true)
        .open(var(LOG_VAR))
        .unwrap();
    runtime().block_on(async {
        let s3 = TestS3::from_env_or_start().unwrap();
        assert!(s3.is_external(), "the child uses the parent's server");
        let (store, _) = SegmentStore::open(
            cache_config(Path::new(&dir), persist),
            s3.store().unwrap(),
            &var(PREFIX_VAR),
            exact_config(),
        )
        .await
        .unwrap();
        File::create(var(READY_VAR)).unwrap();
        write_segments(store, round, log, None).await;
    });
}

fn writer_logs_what_it_put() {
    const LIMIT: u64 = 6;
    let s3 = TestS3::from_env_or_start().unwrap();
    let prefix = s3.unique_prefix("segcache_crash_writer");
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("acks.log");
    let log = File::create(&log_path).unwrap();
    runtime().block_on(async {
        let open = || {
            SegmentStore::open(
                cache_config(&tmp.path().join("cache"), PersistMode::Auto),
                s3.store().unwrap(),
                prefix.as_ref(),
                exact_config(),
            )
        };
        let (store, _) = open().await.unwrap();
        write_segments(store.clone(), 0, log, Some(LIMIT)).await;
        let acked = read_acks(&log_path);
        let expected: BTreeSet<u128> = (0..WRITERS)
            .flat_map(|w| (0..LIMIT).map(move |s| segment_n(0, w, s)))
            .collect();
        assert_eq!(acked, expected);
        for &n in &acked {
            assert!(store.get(id(n)).await.unwrap()[..] == segment(n, MAX_LEN)[..]);
        }
    });
}

/// The ids in the acknowledgement log; a last line cut short by the kill is ignored (its
/// `put` returned, but the test cannot know which segment it was).
fn read_acks(path: &Path) -> BTreeSet<u128> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return BTreeSet::new();
    };
    text.split_inclusive('\n')
        .filter(|line| line.ends_with('\n'))
        .map(|line| u128::from_str_radix(line.trim_end(), 16).unwrap())
        .collect()
}

/// The environment that points a child at the parent's S3 server.
fn child_env(s3: &TestS3) -> Vec<(&'static str, String)> {
    let Some(server) = s3.local() else {
        // An external server is described by the environment the child inherits.
        return Vec::new();
    };
    vec![
        (TestS3::ENDPOINT_VAR, server.endpoint().to_owned()),
        ("AWS_BUCKET", S3Server::BUCKET.to_owned()),
        ("AWS_ACCESS_KEY_ID", S3Server::ACCESS_KEY_ID.to_owned()),
        (
            "AWS_SECRET_ACCESS_KEY",
            S3Server::SECRET_ACCESS_KEY.to_owned(),
        ),
        ("AWS_REGION", S3Server::REGION.to_owned()),
        ("AWS_ALLOW_HTTP", "true".to_owned()),
    ]
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Runs one child until it is ready, lets it write for `run`, kills it, and checks it was the
/// kill that ended it.
fn run_child(
    s3: &TestS3,
    dir: &Path,
    log: &Path,
    stderr: &Path,
    prefix: &str,
    round: u64,
    run: Duration,
) {
    let ready = dir.with_extension("ready");
    match std::fs::remove_file(&ready) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => panic!("removing {}: {err}", ready.display()),
    }
    let exe = std::env::current_exe().unwrap();
    let mut command = Command::new(exe);
    command
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(DIR_VAR, dir)
        .env(LOG_VAR, log)
        .env(READY_VAR, &ready)
        .env(ROUND_VAR, round.to_string())
        .env(PREFIX_VAR, prefix)
        .env(
            PERSIST_VAR,
            if round.is_multiple_of(2) {
                "auto"
            } else {
                "rename"
            },
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(stderr).unwrap());
    if s3.local().is_some() {
        command.env_remove("AWS_SESSION_TOKEN");
    }
    command.envs(child_env(s3));
    let mut child = command.spawn().unwrap();
    let why = || std::fs::read_to_string(stderr).unwrap_or_default();
    // Wait for the child to open its store (or to end, which fails the round).
    while !ready.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "round {round}: the child ended ({status}) before it was ready:\n{}",
                why()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(run);
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "round {round}: the child ended by itself ({status}):\n{}",
        why()
    );
}

/// Opens the cache after a kill and checks it; returns how many segments it found cached.
async fn check_after_kill(
    store: &SegmentStore,
    dir: &Path,
    must_have: impl IntoIterator<Item = u128>,
) -> usize {
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|name| !name.starts_with(".tmp-")),
        "a temporary file survived the scan: {names:?}"
    );
    // Every cached segment is whole: its bytes follow from its id.
    let cached: Vec<u128> = names
        .iter()
        .filter_map(|name| name.strip_suffix(".seg"))
        .map(|hex| u128::from_str_radix(hex, 16).unwrap())
        .collect();
    for &n in &cached {
        let got = store.get(id(n)).await.unwrap();
        assert!(
            got[..] == segment(n, MAX_LEN)[..],
            "segment {n:032x} is torn"
        );
    }
    // Every acknowledged segment is cached or downloadable, whole (fetched 16 at a time).
    let checks: Vec<u128> = must_have.into_iter().collect();
    futures::stream::iter(checks)
        .for_each_concurrent(16, |n| async move {
            let got = store.get(id(n)).await.unwrap_or_else(|err| {
                panic!("acknowledged segment {n:032x} is lost: {err:?}");
            });
            assert!(
                got[..] == segment(n, MAX_LEN)[..],
                "segment {n:032x} is torn"
            );
        })
        .await;
    cached.len()
}

#[test]
fn kill_the_writer_at_random_points() {
    let s3 = TestS3::from_env_or_start().unwrap();
    let prefix = s3.unique_prefix("segcache_crash").to_string();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let log = tmp.path().join("acks.log");
    let stderr = tmp.path().join("child.stderr");
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    println!("crash test seed {seed:#x}, against {}", s3.description());
    let mut rng = Rng(seed);
    let rt = runtime();
    let start = Instant::now();
    let (mut previous, mut cached_total, mut downloads) = (BTreeSet::new(), 0, 0);
    for round in 0..ROUNDS {
        let run = Duration::from_millis(rng.below(200));
        run_child(&s3, &dir, &log, &stderr, &prefix, round, run);
        let acked = read_acks(&log);
        assert!(acked.is_superset(&previous), "the log lost entries");
        let new: Vec<u128> = acked.difference(&previous).copied().collect();
        let mut sample: Vec<u128> = previous.iter().copied().collect();
        let mut checked = Vec::new();
        for _ in 0..SAMPLE.min(sample.len()) {
            let i = rng.below(sample.len() as u64) as usize;
            checked.push(sample.swap_remove(i));
        }
        rt.block_on(async {
            let (store, report) = SegmentStore::open(
                cache_config(&dir, PersistMode::Auto),
                s3.store().unwrap(),
                &prefix,
                exact_config(),
            )
            .await
            .unwrap();
            let check = new.iter().chain(&checked).copied();
            cached_total += check_after_kill(&store, &dir, check).await;
            downloads += store.stats().downloads;
            // The report says what the scan did; nothing it reports may be served.
            for rejected in &report.rejected {
                println!("round {round}: scan rejected {rejected:?}");
            }
        });
        previous = acked;
    }
    // Finally every acknowledged segment, once more.
    rt.block_on(async {
        let (store, _) = SegmentStore::open(
            cache_config(&dir, PersistMode::Auto),
            s3.store().unwrap(),
            &prefix,
            exact_config(),
        )
        .await
        .unwrap();
        check_after_kill(&store, &dir, previous.iter().copied()).await;
    });
    println!(
        "{ROUNDS} kills in {:.1} s: {} segments acknowledged, {cached_total} cached segments \
         checked after kills, {downloads} downloads",
        start.elapsed().as_secs_f64(),
        previous.len()
    );
    assert!(
        previous.len() as u64 >= ROUNDS,
        "the children acknowledged too few puts to test anything: {}",
        previous.len()
    );
}
