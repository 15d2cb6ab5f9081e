//! Helpers shared by the scenario tests.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use segcache::{CacheConfig, SegmentCache, SegmentId, SegmentRef};

/// A fresh cache directory path (not yet created) inside a temporary directory.
pub fn cache_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("cache");
    (tmp, dir)
}

/// Opens a cache, panicking with the error on failure.
pub async fn open(config: CacheConfig) -> (SegmentCache, segcache::ScanReport) {
    SegmentCache::open(config).await.expect("open cache")
}

/// Deterministic content for segment `n` of `len` bytes.
pub fn content(n: u128, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u128 * 31 + n * 7 + (i as u128 >> 8)) as u8)
        .collect()
}

/// Reserve, write, persist.
pub async fn put(cache: &SegmentCache, n: u128, data: &[u8]) -> SegmentRef {
    let id = SegmentId::from_u128(n);
    let slot = cache.reserve(id, data.len() as u64).await.expect("reserve");
    slot.write_at(0, data).expect("write");
    slot.persist().await.expect("persist")
}

/// The names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The file name of segment `n`.
pub fn seg_name(n: u128) -> String {
    format!("{n:032x}.seg")
}

/// A segment file written by hand in the documented format: data, magic, id, len, CRC32C of
/// the data, CRC32C of the footer so far.
pub fn segment_file_bytes(id: SegmentId, data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut footer = Vec::with_capacity(40);
    footer.extend_from_slice(b"PSSEG001");
    footer.extend_from_slice(id.as_bytes());
    footer.extend_from_slice(&(data.len() as u64).to_le_bytes());
    footer.extend_from_slice(&crc32c::crc32c(data).to_le_bytes());
    let own = crc32c::crc32c(&footer);
    footer.extend_from_slice(&own.to_le_bytes());
    out.extend_from_slice(&footer);
    out
}

/// Writes `bytes` as file `name` in `dir`, mode 0600.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, bytes).expect("write file");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// Permission bits of a path.
pub fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
}

/// The path prefix of entries inside `dir`, as `/proc` shows them.
fn proc_prefix(dir: &Path) -> String {
    let dir = fs::canonicalize(dir).expect("canonical cache dir");
    format!("{}/", dir.display())
}

/// This process's open descriptors on files inside `dir` (not `dir` itself), read from
/// `/proc/self/fd`, as `"<fd> <target>"`. Descriptors closed while reading are skipped.
pub fn fd_entries(dir: &Path) -> Vec<String> {
    let prefix = proc_prefix(dir);
    let Ok(entries) = fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let mut fds: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let target = fs::read_link(e.path()).ok()?;
            let target = target.to_string_lossy().into_owned();
            target
                .starts_with(&prefix)
                .then(|| format!("{} {target}", e.file_name().to_string_lossy()))
        })
        .collect();
    fds.sort();
    fds
}

/// How many descriptors this process has open on files inside `dir`.
pub fn fds_in(dir: &Path) -> usize {
    fd_entries(dir).len()
}

/// This process's mappings of files inside `dir`: the whole `/proc/self/maps` lines.
pub fn map_lines(dir: &Path) -> Vec<String> {
    let prefix = proc_prefix(dir);
    let maps = fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    maps.lines()
        .filter(|line| line.contains(&prefix))
        .map(str::to_owned)
        .collect()
}

/// This process's mappings of files inside `dir`, as the file names `/proc/self/maps` shows.
pub fn maps_in(dir: &Path) -> Vec<String> {
    let prefix = proc_prefix(dir);
    map_lines(dir)
        .into_iter()
        .filter_map(|line| {
            line.find(&prefix)
                .map(|at| line[at + prefix.len()..].to_owned())
        })
        .collect()
}
