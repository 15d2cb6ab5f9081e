//! Helpers shared by the segcache benches: the bench-run check, driving futures that complete
//! without waiting, and writing segment files in the on-disk format directly (fast set-up of
//! many segments, without one `fsync` per file).
#![allow(dead_code, reason = "each bench binary uses a different subset")]

use std::fs::OpenOptions;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

/// The magic that opens a segment footer (README "On disk").
const MAGIC: &[u8; 8] = b"PSSEG001";

/// Whether this is a bench run. `cargo bench` (and so `cargo xtask bench`) passes `--bench`;
/// nextest's listing and `cargo test` do not, and then the binary lists nothing and does
/// nothing (building the data sets would only slow the test suite down).
pub fn is_bench_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Polls `fut` once with a no-op waker and returns its output; panics if it is not ready.
///
/// For the calls that never wait when the cache is used outside a tokio runtime and has
/// handles to spare: a hit `get` (one lock, no I/O), and `open` / `reserve` / `persist`, whose
/// blocking work then runs inline on the calling thread instead of on tokio's blocking pool.
/// It measures the cache's own work without an executor's cost; awaiting an already-ready
/// future inside a running task costs about the same.
pub fn now<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a call expected to complete without waiting returned Pending"),
    }
}

/// The file name of segment `n`: `<32 lowercase hex>.seg`, as `SegmentId::from_u128(n)` names
/// it.
pub fn segment_name(n: u128) -> String {
    format!("{n:032x}.seg")
}

/// The 40-byte footer of segment `n` with `data`: magic, id (big-endian `n`), length (u64 LE),
/// CRC32C of the data, CRC32C of the 36 bytes before it.
pub fn footer(n: u128, data: &[u8]) -> [u8; 40] {
    let mut out = [0u8; 40];
    out[..8].copy_from_slice(MAGIC);
    out[8..24].copy_from_slice(&n.to_be_bytes());
    out[24..32].copy_from_slice(&(data.len() as u64).to_le_bytes());
    out[32..36].copy_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let own = crc32c::crc32c(&out[..36]);
    out[36..].copy_from_slice(&own.to_le_bytes());
    out
}

/// Creates the cache directory `dir` (0700, as the cache wants it).
pub fn create_cache_dir(dir: &Path) {
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .expect("create cache directory");
}

/// Writes segment `n` with `data` straight into `dir` in the on-disk format (0600, no sync):
/// what the cache's scan loads. The scan of the bench checks every file was accepted.
pub fn write_segment_file(dir: &Path, n: u128, data: &[u8]) {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(segment_name(n)))
        .expect("create segment file");
    let mut bytes = Vec::with_capacity(data.len() + 40);
    bytes.extend_from_slice(data);
    bytes.extend_from_slice(&footer(n, data));
    file.write_all(&bytes).expect("write segment file");
}
