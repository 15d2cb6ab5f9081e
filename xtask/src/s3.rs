//! The S3 server that `test-all` runs objsync's S3 suite against.
//!
//! Which server, in order:
//! 1. an endpoint from the environment (`PAGESTORE_S3_ENDPOINT`, `AWS_ENDPOINT` or
//!    `AWS_ENDPOINT_URL`, with a bucket and keys in the usual `AWS_*` variables): used as is;
//! 2. a `minio` binary, named by `MINIO_BIN` or found on `PATH`: started on a free loopback port
//!    over a temp data dir;
//! 3. a throwaway Ceph cluster with its RADOS Gateway ([`crate::ceph`]), Debian's packages
//!    installed on first use: a production S3 implementation, atomic where s3s-fs is not;
//! 4. only when Ceph cannot be had (no root, no apt-get, a failed install) or
//!    `PAGESTORE_S3_NO_CEPH` is set: the `s3s-fs` server binary, pinned to [`S3S_FS_VERSION`]
//!    and installed by cargo into `<workspace>/.tools` on first use (reused after), started like
//!    `MinIO` — said loudly, since s3s-fs is a demo server.
//!
//! A started server lives in [`ChildGuard`]s, so it stops on every exit path; its data dir is a
//! [`TempDir`] removed after it stops. Readiness is a raw HTTP/1.1 request over `std::net` (no
//! HTTP client in xtask): `GET /minio/health/ready`, which `MinIO` answers with 200 once it can
//! serve and 503 before; s3s-fs has no such route and answers an unsigned request with 403. So a
//! server is ready when it answers with any status below 500, and that one probe fits both.
//!
//! The bucket is created as a directory in the data dir once the server answers. s3s-fs's
//! `CreateBucket` is exactly that (`create_dir` under its root), and its `HeadBucket` and
//! `ListObjects` answer `NoSuchBucket` without the directory (its PUT would make the directory
//! itself, so the suite's LISTs are what proves the bucket). `MinIO` serves buckets from the
//! top-level directories of its drive too; the directory is made after `MinIO` has formatted the
//! drive (it answers only then), so the drive is not mistaken for a foreign one. This is not
//! checked against a real `MinIO` here (none on this machine): a release that did not see such a
//! bucket would fail the S3 suite with `NoSuchBucket`, not skip it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::process::ChildGuard;

/// The s3s-fs release installed as the fallback server (0.17 needs a newer rustc than 1.95).
pub const S3S_FS_VERSION: &str = "0.14.1";
/// The bucket created in a server that xtask starts.
pub const BUCKET: &str = "pagestore-test";
/// Test credentials of a server that xtask starts (`MinIO` wants a user of 3+ characters and a
/// password of 8+).
pub const ACCESS_KEY: &str = "pagestore-test-key";
/// The secret key that goes with [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "pagestore-test-secret";
/// The region of a server xtask starts.
pub const REGION: &str = "us-east-1";
/// How long a started server gets to answer (`MinIO` formats its drive on first start).
const READY_TIMEOUT: Duration = Duration::from_mins(1);
/// Attempts to start a local server: a free port found by binding port 0 may be taken by
/// someone else before the server binds it.
const START_ATTEMPTS: usize = 3;

/// A snapshot of environment variables, so selection can be tested without touching the
/// process environment.
#[derive(Debug, Clone, Default)]
pub struct Vars(BTreeMap<String, OsString>);

impl Vars {
    /// The variables of this process (those with UTF-8 names).
    pub fn from_process() -> Self {
        Self(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
                .collect(),
        )
    }

    /// Sets a variable.
    #[cfg(test)]
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.0.insert(key.to_owned(), value.into());
        self
    }

    /// A variable that is set and not empty.
    fn get(&self, key: &str) -> Option<&OsStr> {
        self.0
            .get(key)
            .map(OsString::as_os_str)
            .filter(|v| !v.is_empty())
    }

    /// The first of `keys` that is set, with its name.
    fn first(&self, keys: &[&'static str]) -> Option<(&'static str, &OsStr)> {
        keys.iter().find_map(|&k| Some((k, self.get(k)?)))
    }
}

/// Which kind of server the S3 suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An endpoint given in the environment.
    External,
    /// A `MinIO` binary started by xtask.
    Minio,
    /// A Ceph cluster with its RADOS Gateway, started by xtask.
    CephRgw,
    /// The s3s-fs binary started by xtask.
    S3sFs,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::External => "external endpoint",
            Self::Minio => "minio",
            Self::CephRgw => "Ceph RGW",
            Self::S3sFs => "s3s-fs",
        })
    }
}

/// The server chosen from the environment, before anything is started.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    /// Use this endpoint; `from` names the variable it came from.
    External {
        endpoint: String,
        from: &'static str,
    },
    /// Start this `MinIO` binary; `from` says how it was found.
    Minio { bin: PathBuf, from: &'static str },
    /// Start a Ceph cluster (installed on first use), or s3s-fs if Ceph cannot be had.
    Ceph,
    /// Start s3s-fs (installed on first use); `why` says why not Ceph.
    S3sFs { why: &'static str },
}

/// The variable that makes `test-all` skip Ceph for s3s-fs (a quick local run).
pub const NO_CEPH_VAR: &str = "PAGESTORE_S3_NO_CEPH";

/// The S3 server of a run: where it is, what the S3 step needs to reach it, and, for a server
/// xtask started, the guard that stops it and its data dir.
#[derive(Debug)]
pub struct Server {
    /// Which kind of server.
    pub kind: Kind,
    /// One line saying which server this is, for the console and the summary.
    pub description: String,
    /// Variables for the S3 step: `PAGESTORE_S3_ENDPOINT` (which the suite reads as "use this
    /// server") and the `AWS_*` variables of `objsync::S3Config::from_env`.
    pub vars: Vec<(OsString, OsString)>,
    /// The processes, for servers xtask started, in the order to stop them; each stops when
    /// dropped.
    pub guards: Vec<ChildGuard>,
    /// The server's scratch directory (data dir and log), removed when dropped. Drop it after
    /// the guard: field order does that for a `Server` dropped whole.
    pub scratch: Option<TempDir>,
}

impl Server {
    /// The server's data dir (where buckets are directories), for servers xtask started.
    #[cfg(test)]
    pub fn data_dir(&self) -> Option<PathBuf> {
        self.scratch.as_ref().map(|s| s.path().join("data"))
    }

    /// Splits the server into its guards (to be stopped first, in order) and the scratch
    /// directory (to be removed after).
    pub fn into_parts(self) -> (Vec<ChildGuard>, Option<TempDir>) {
        (self.guards, self.scratch)
    }
}

/// Chooses the server from `vars` (see the module docs) and starts it if it is local.
pub fn start(vars: &Vars) -> anyhow::Result<Server> {
    match choose(vars)? {
        Choice::External { endpoint, from } => Ok(external(vars, &endpoint, from)),
        Choice::Minio { bin, from } => {
            let description = format!("minio ({}, from {from})", bin.display());
            start_local(Kind::Minio, &bin, &description)
        }
        Choice::Ceph => {
            let path = vars.get("PATH").unwrap_or_default();
            match crate::ceph::ensure_installed(path) {
                Ok(install) => start_ceph(&install),
                Err(err) => {
                    let why = format!("Ceph RGW cannot be had here: {err:#}");
                    eprintln!("xtask: WARNING: {why}");
                    eprintln!(
                        "xtask: WARNING: falling back to s3s-fs, a demo server (not atomic for \
                         concurrent conditional PUTs, no conditional multipart)"
                    );
                    start_s3s_fs(&why)
                }
            }
        }
        Choice::S3sFs { why } => start_s3s_fs(why),
    }
}

/// Starts the pinned s3s-fs (installed on first use); `why` says why not Ceph, loudly.
fn start_s3s_fs(why: &str) -> anyhow::Result<Server> {
    let (bin, installed) = ensure_s3s_fs()?;
    let how = if installed {
        "installed now"
    } else {
        "already installed"
    };
    let description = format!(
        "s3s-fs {S3S_FS_VERSION} ({}, {how}) — FALLBACK, a demo server: {why}",
        bin.display()
    );
    start_local(Kind::S3sFs, &bin, &description)
}

/// Starts a Ceph cluster in a fresh temp dir (twice at most: a free port found by binding port
/// 0 may be taken before a daemon binds it).
fn start_ceph(install: &crate::ceph::Install) -> anyhow::Result<Server> {
    let version = crate::ceph::version().unwrap_or_else(|| "(unknown version)".into());
    let account = crate::ceph::Account {
        access_key: ACCESS_KEY,
        secret_key: SECRET_KEY,
        bucket: BUCKET,
        region: REGION,
    };
    let mut last_err = None;
    for _ in 0..2 {
        let scratch = tempfile::Builder::new()
            .prefix("pagestore-ceph-")
            .tempdir()
            .context("creating the Ceph cluster's directory")?;
        match crate::ceph::start(scratch.path(), account, crate::ceph::Mode::Guarded) {
            Ok(cluster) => {
                let installed = match install.installed_in {
                    Some(took) => format!("installed now in {}", crate::steps::fmt_duration(took)),
                    None => "already installed".into(),
                };
                let description = format!(
                    "Ceph RGW {version} (one monitor, one memstore OSD, radosgw; packages \
                     {installed}) at {}, bucket {BUCKET}, started in {}",
                    cluster.endpoint,
                    crate::steps::fmt_duration(cluster.started_in)
                );
                let guards = cluster
                    .daemons
                    .into_iter()
                    .filter_map(|d| match d {
                        crate::ceph::Daemon::Guarded(guard) => Some(guard),
                        crate::ceph::Daemon::Detached(_) => None,
                    })
                    .collect();
                return Ok(Server {
                    kind: Kind::CephRgw,
                    description,
                    vars: local_vars(&cluster.endpoint, &format!("ceph-rgw {version}")),
                    guards,
                    scratch: Some(scratch),
                });
            }
            Err(err) => last_err = Some(err),
        }
    }
    Err(last_err.expect("two attempts"))
}

/// The variables that name an S3 endpoint, first set wins (`test-all` and `demo --s3` alike).
pub const ENDPOINT_VARS: &[&str] = &["PAGESTORE_S3_ENDPOINT", "AWS_ENDPOINT", "AWS_ENDPOINT_URL"];
/// The variables that name the bucket, first set wins.
pub const BUCKET_VARS: &[&str] = &["AWS_BUCKET", "AWS_BUCKET_NAME"];

/// The server `vars` asks for, without starting anything.
fn choose(vars: &Vars) -> anyhow::Result<Choice> {
    if let Some((from, endpoint)) = vars.first(ENDPOINT_VARS) {
        let endpoint = endpoint
            .to_str()
            .with_context(|| format!("{from} is not UTF-8"))?
            .to_owned();
        // An endpoint without its bucket or keys is a mistake worth stopping for, not a reason
        // to quietly test against another server.
        let missing: Vec<&str> = [
            BUCKET_VARS,
            &["AWS_ACCESS_KEY_ID"],
            &["AWS_SECRET_ACCESS_KEY"],
        ]
        .iter()
        .filter(|names| vars.first(names).is_none())
        .map(|names| names[0])
        .collect();
        if !missing.is_empty() {
            bail!(
                "{from} names an S3 endpoint ({endpoint}) but {} not set",
                if missing.len() == 1 {
                    format!("{} is", missing[0])
                } else {
                    format!("{} are", missing.join(", "))
                }
            );
        }
        return Ok(Choice::External { endpoint, from });
    }
    if let Some(bin) = vars.get("MINIO_BIN") {
        let bin = PathBuf::from(bin);
        if !is_executable(&bin) {
            bail!("MINIO_BIN={} is not an executable file", bin.display());
        }
        return Ok(Choice::Minio {
            bin,
            from: "MINIO_BIN",
        });
    }
    if let Some(bin) = vars
        .get("PATH")
        .and_then(|path| find_on_path("minio", path))
    {
        return Ok(Choice::Minio { bin, from: "PATH" });
    }
    if vars.get(NO_CEPH_VAR).is_some() {
        return Ok(Choice::S3sFs {
            why: "PAGESTORE_S3_NO_CEPH is set",
        });
    }
    Ok(Choice::Ceph)
}

/// An endpoint from the environment: the S3 step inherits the `AWS_*` variables; xtask adds the
/// variable the suite looks for.
fn external(vars: &Vars, endpoint: &str, from: &'static str) -> Server {
    let mut step_vars = vec![
        ("PAGESTORE_S3_ENDPOINT".into(), endpoint.into()),
        ("PAGESTORE_S3_SERVER".into(), "external".into()),
    ];
    if endpoint.starts_with("http://") && vars.get("AWS_ALLOW_HTTP").is_none() {
        step_vars.push(("AWS_ALLOW_HTTP".into(), "true".into()));
    }
    let bucket = vars
        .first(BUCKET_VARS)
        .map_or_else(String::new, |(_, b)| b.to_string_lossy().into_owned());
    Server {
        kind: Kind::External,
        description: format!("external endpoint {endpoint} (from {from}), bucket {bucket}"),
        vars: step_vars,
        guards: Vec::new(),
        scratch: None,
    }
}

/// Starts `MinIO` or s3s-fs on a free loopback port over a fresh data dir, waits until it
/// answers, and creates the bucket.
fn start_local(kind: Kind, bin: &Path, description: &str) -> anyhow::Result<Server> {
    let mut last_err = None;
    for _ in 0..START_ATTEMPTS {
        match start_once(kind, bin) {
            Ok((guard, scratch, addr)) => {
                let endpoint = format!("http://{addr}");
                let server = match kind {
                    Kind::S3sFs => format!("s3s-fs {S3S_FS_VERSION}"),
                    other => other.to_string(),
                };
                return Ok(Server {
                    kind,
                    description: format!("{description} at {endpoint}, bucket {BUCKET}"),
                    vars: local_vars(&endpoint, &server),
                    guards: vec![guard],
                    scratch: Some(scratch),
                });
            }
            // Only a server that exited early (say, its port was taken) is worth another try.
            Err(StartError::Exited(err)) => last_err = Some(err),
            Err(StartError::Other(err)) => return Err(err),
        }
    }
    Err(last_err.expect("START_ATTEMPTS > 0"))
        .with_context(|| format!("{kind} exited before it was ready, {START_ATTEMPTS} times"))
}

enum StartError {
    /// The server exited before it answered.
    Exited(anyhow::Error),
    Other(anyhow::Error),
}

impl From<anyhow::Error> for StartError {
    fn from(err: anyhow::Error) -> Self {
        Self::Other(err)
    }
}

fn start_once(kind: Kind, bin: &Path) -> Result<(ChildGuard, TempDir, SocketAddr), StartError> {
    let scratch = tempfile::Builder::new()
        .prefix("pagestore-s3-")
        .tempdir()
        .context("creating the S3 server's scratch directory")?;
    let data = scratch.path().join("data");
    std::fs::create_dir(&data).context("creating the S3 server's data dir")?;
    let log_path = scratch.path().join("server.log");
    let log = File::create(&log_path).context("creating the S3 server's log")?;
    let addr = free_loopback_addr().context("finding a free loopback port")?;

    let mut cmd = Command::new(bin);
    match kind {
        Kind::Minio => {
            // The console (a web UI) gets its own loopback port rather than a random one on
            // every interface.
            let console = free_loopback_addr().context("finding a free loopback port")?;
            cmd.arg("server")
                .arg(&data)
                .args(["--address", &addr.to_string()])
                .args(["--console-address", &console.to_string()])
                .arg("--quiet")
                .env("MINIO_ROOT_USER", ACCESS_KEY)
                .env("MINIO_ROOT_PASSWORD", SECRET_KEY)
                .env("MINIO_BROWSER", "off");
        }
        Kind::S3sFs => {
            cmd.args(["--host", &addr.ip().to_string()])
                .args(["--port", &addr.port().to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(&data);
        }
        Kind::External | Kind::CephRgw => {
            unreachable!("external servers are not started, Ceph is started by crate::ceph")
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().context("opening the S3 server's log")?)
        .stderr(log);
    let mut guard = ChildGuard::spawn(format!("S3 server ({kind})"), cmd)?;

    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if !guard.is_running().context("checking the S3 server")? {
            return Err(StartError::Exited(anyhow::anyhow!(
                "{kind} exited before it answered; its log ({}):\n{}",
                log_path.display(),
                log_tail(&log_path)
            )));
        }
        match probe(addr) {
            Ok(status) if status < 500 => break,
            Ok(_) | Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(status) => {
                return Err(StartError::Other(anyhow::anyhow!(
                    "{kind} still answers {status} after {READY_TIMEOUT:?}; its log:\n{}",
                    log_tail(&log_path)
                )));
            }
            Err(err) => {
                return Err(StartError::Other(anyhow::anyhow!(
                    "{kind} does not answer on {addr} after {READY_TIMEOUT:?} ({err}); its log:\n{}",
                    log_tail(&log_path)
                )));
            }
        }
    }
    let bucket = data.join(BUCKET);
    std::fs::create_dir(&bucket)
        .with_context(|| format!("creating the bucket directory {}", bucket.display()))?;
    Ok((guard, scratch, addr))
}

/// What the S3 step needs to reach a server xtask started; `server` names it in messages.
pub fn local_vars(endpoint: &str, server: &str) -> Vec<(OsString, OsString)> {
    [
        ("PAGESTORE_S3_ENDPOINT", endpoint),
        ("PAGESTORE_S3_SERVER", server),
        // Both spellings, so neither a stale one from the caller's shell wins.
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_BUCKET", BUCKET),
        ("AWS_BUCKET_NAME", BUCKET),
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", REGION),
        // Settings from the caller's shell that would not fit a local server: an empty
        // variable counts as unset.
        ("AWS_SESSION_TOKEN", ""),
        ("AWS_VIRTUAL_HOSTED_STYLE_REQUEST", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.into(), v.into()))
    .collect()
}

/// A loopback address with a port that was free a moment ago.
pub(crate) fn free_loopback_addr() -> io::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// Sends `GET /minio/health/ready` and returns the response's status code.
fn probe(addr: SocketAddr) -> io::Result<u16> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET /minio/health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    parse_status_line(&line).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP status line: {line:?}"),
        )
    })
}

/// The status code of an HTTP/1.x status line (`HTTP/1.1 403 Forbidden`).
pub(crate) fn parse_status_line(line: &str) -> Option<u16> {
    let mut words = line.split_whitespace();
    if !words.next()?.starts_with("HTTP/1.") {
        return None;
    }
    words.next()?.parse().ok()
}

/// The last lines of a server log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    let Ok(text) = std::fs::read_to_string(path) else {
        return "(no log)".into();
    };
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(20)..].join("\n");
    if tail.trim().is_empty() {
        "(empty)".into()
    } else {
        tail
    }
}

/// `<workspace>/.tools`, where pinned tools are installed (ignored by git).
pub fn tools_root() -> PathBuf {
    crate::project_root().join(".tools")
}

/// The pinned s3s-fs binary, installed by `cargo install` into [`tools_root`] unless it is
/// there already. Returns its path and whether it was installed now.
pub fn ensure_s3s_fs() -> anyhow::Result<(PathBuf, bool)> {
    let root = tools_root();
    let bin = root.join("bin").join("s3s-fs");
    if installed_version(&bin).as_deref() == Some(S3S_FS_VERSION) {
        return Ok((bin, false));
    }
    eprintln!(
        "xtask: installing s3s-fs {S3S_FS_VERSION} into {} (first use; reused after)",
        root.display()
    );
    // The crate publishes its Cargo.lock, so `--locked` builds the dependency versions it was
    // released with.
    let mut cmd = crate::cargo_command();
    cmd.args(["install", "s3s-fs", "--version"])
        .arg(format!("={S3S_FS_VERSION}"))
        .args(["--features", "binary", "--locked", "--root"])
        .arg(&root);
    let status = ChildGuard::spawn("cargo install s3s-fs", cmd)?
        .wait()
        .context("waiting for cargo install")?;
    if !status.success() {
        bail!("`cargo install s3s-fs --version ={S3S_FS_VERSION}` failed ({status})");
    }
    match installed_version(&bin) {
        Some(v) if v == S3S_FS_VERSION => Ok((bin, true)),
        other => bail!(
            "after cargo install, {} reports version {other:?}, not {S3S_FS_VERSION}",
            bin.display()
        ),
    }
}

/// The version a `s3s-fs --version` prints (`s3s-fs 0.14.1`), if the binary runs.
fn installed_version(bin: &Path) -> Option<String> {
    if !bin.is_file() {
        return None;
    }
    let out = Command::new(bin)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().strip_prefix("s3s-fs ")?.to_owned())
}

/// The first executable file called `name` in the directories of a `PATH` value.
pub(crate) fn find_on_path(name: &str, path: &OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::OpenOptionsExt as _;

    use super::*;

    /// A `minio` stand-in: `MinIO`'s command line and credentials, translated for s3s-fs. It is
    /// strict about the arguments, so xtask calling `MinIO` wrongly fails the test; it records
    /// what it was given in `invocation` next to itself.
    const STAND_IN: &str = r#"#!/bin/sh
set -eu
here=${0%/*}
fail() { echo "minio stand-in: $*" >&2; exit 2; }
[ "${1-}" = server ] || fail "expected 'server', got '${1-}'"
shift
dir= address=
while [ $# -gt 0 ]; do
    case "$1" in
        --address) [ $# -ge 2 ] || fail "--address needs a value"; address=$2; shift 2 ;;
        --console-address) [ $# -ge 2 ] || fail "--console-address needs a value"; shift 2 ;;
        --quiet) shift ;;
        -*) fail "unknown flag $1" ;;
        *) [ -z "$dir" ] || fail "more than one data dir"; dir=$1; shift ;;
    esac
done
[ -n "$dir" ] || fail "no data dir"
[ -n "$address" ] || fail "no --address"
[ -n "${MINIO_ROOT_USER-}" ] || fail "MINIO_ROOT_USER is not set"
[ -n "${MINIO_ROOT_PASSWORD-}" ] || fail "MINIO_ROOT_PASSWORD is not set"
printf '%s\n%s\n%s\n' "$dir" "$address" "$MINIO_ROOT_USER" > "$here/invocation"
exec @S3S_FS@ --host "${address%:*}" --port "${address##*:}" \
    --access-key "$MINIO_ROOT_USER" --secret-key "$MINIO_ROOT_PASSWORD" "$dir"
"#;

    fn write_stand_in(dir: &Path, s3s_fs: &Path) -> PathBuf {
        let path = dir.join("minio");
        let script = STAND_IN.replace("@S3S_FS@", &format!("'{}'", s3s_fs.display()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&path)
            .unwrap();
        file.write_all(script.as_bytes()).unwrap();
        // Closed before anything executes it (an open writer makes exec fail with ETXTBSY).
        drop(file);
        path
    }

    /// The endpoint the S3 step is given.
    fn endpoint(server: &Server) -> String {
        let (_, value) = server
            .vars
            .iter()
            .find(|(k, _)| k == "PAGESTORE_S3_ENDPOINT")
            .expect("PAGESTORE_S3_ENDPOINT is exported");
        value.to_str().unwrap().to_owned()
    }

    fn vars_with_path(path: &Path) -> Vars {
        Vars::default().with("PATH", path.as_os_str())
    }

    #[test]
    fn an_endpoint_in_the_environment_wins() {
        let vars = Vars::default()
            .with("AWS_ENDPOINT_URL", "http://127.0.0.1:9000")
            .with("AWS_BUCKET_NAME", "b")
            .with("AWS_ACCESS_KEY_ID", "k")
            .with("AWS_SECRET_ACCESS_KEY", "s")
            .with("MINIO_BIN", "/bin/sh");
        assert_eq!(
            choose(&vars).unwrap(),
            Choice::External {
                endpoint: "http://127.0.0.1:9000".into(),
                from: "AWS_ENDPOINT_URL"
            }
        );
        let server = external(&vars, "http://127.0.0.1:9000", "AWS_ENDPOINT_URL");
        assert!(server.guards.is_empty());
        let get = |key: &str| {
            server
                .vars
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(
            get("PAGESTORE_S3_ENDPOINT"),
            Some("http://127.0.0.1:9000".into())
        );
        assert_eq!(get("AWS_ALLOW_HTTP"), Some("true".into()));
    }

    #[test]
    fn an_endpoint_without_bucket_or_keys_is_an_error() {
        let vars = Vars::default()
            .with("AWS_ENDPOINT", "https://s3.example.invalid")
            .with("AWS_ACCESS_KEY_ID", "k");
        let err = choose(&vars).unwrap_err().to_string();
        assert!(
            err.contains("AWS_BUCKET, AWS_SECRET_ACCESS_KEY are not set"),
            "{err}"
        );
    }

    #[test]
    fn minio_bin_then_path_then_s3s_fs() {
        let dir = tempfile::tempdir().unwrap();
        let on_path = write_stand_in(dir.path(), Path::new("/nonexistent"));
        let vars = vars_with_path(dir.path());
        assert_eq!(
            choose(&vars).unwrap(),
            Choice::Minio {
                bin: on_path,
                from: "PATH"
            }
        );
        let vars = vars.with("MINIO_BIN", "/bin/sh");
        assert_eq!(
            choose(&vars).unwrap(),
            Choice::Minio {
                bin: "/bin/sh".into(),
                from: "MINIO_BIN"
            }
        );
        let vars = Vars::default().with("MINIO_BIN", dir.path().join("absent"));
        assert!(choose(&vars).is_err(), "a wrong MINIO_BIN is not ignored");
        // A directory called `minio`, or a file without an exec bit, is not a binary.
        let empty = tempfile::tempdir().unwrap();
        std::fs::create_dir(empty.path().join("minio")).unwrap();
        assert_eq!(choose(&vars_with_path(empty.path())).unwrap(), Choice::Ceph);
        assert_eq!(choose(&Vars::default()).unwrap(), Choice::Ceph);
        assert_eq!(
            choose(&Vars::default().with(NO_CEPH_VAR, "1")).unwrap(),
            Choice::S3sFs {
                why: "PAGESTORE_S3_NO_CEPH is set"
            }
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 403 Forbidden\r\n"), Some(403));
        assert_eq!(parse_status_line("HTTP/1.0 200 OK\r\n"), Some(200));
        assert_eq!(parse_status_line("SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status_line(""), None);
    }

    /// Checks a started server: it answers, the bucket is a directory of its data dir, and once
    /// dropped the process is gone, the port closed and the data dir removed.
    fn check_lifecycle(server: Server) {
        let addr: SocketAddr = endpoint(&server)
            .strip_prefix("http://")
            .unwrap()
            .parse()
            .unwrap();
        assert!(addr.ip().is_loopback());
        assert!(probe(addr).unwrap() < 500);
        let data = server.data_dir().unwrap();
        assert!(data.join(BUCKET).is_dir());
        let scratch = server.scratch.as_ref().unwrap().path().to_owned();
        let pid = {
            let mut server = server;
            let guard = server.guards.first_mut().unwrap();
            assert!(guard.is_running().unwrap());
            let pid = rustix::process::Pid::from_child(guard.child_mut());
            drop(server);
            pid
        };
        assert!(
            rustix::process::test_kill_process(pid).is_err(),
            "the server process is reaped"
        );
        assert!(
            TcpStream::connect(addr).is_err(),
            "nothing listens any more"
        );
        assert!(!scratch.exists(), "the data dir is removed");
    }

    /// The `MinIO` path end to end, on a machine without `MinIO`: a stand-in `minio` on `PATH`
    /// (wrapping the pinned s3s-fs, installed by this test on first use like `test-all` does)
    /// is chosen, started with `MinIO`'s command line and credentials, probed until ready, given
    /// its bucket, and stopped.
    #[test]
    fn minio_stand_in_is_started_readied_given_a_bucket_and_stopped() {
        let (s3s_fs, _) = ensure_s3s_fs().unwrap();
        let bin_dir = tempfile::tempdir().unwrap();
        let stand_in = write_stand_in(bin_dir.path(), &s3s_fs);
        let path = std::env::join_paths([Path::new("/nonexistent"), bin_dir.path()]).unwrap();
        let vars = Vars::default().with("PATH", path);

        let server = start(&vars).unwrap();
        assert_eq!(server.kind, Kind::Minio);
        assert!(
            server.description.contains(&stand_in.display().to_string()),
            "{}",
            server.description
        );
        let invocation = std::fs::read_to_string(bin_dir.path().join("invocation")).unwrap();
        let lines: Vec<&str> = invocation.lines().collect();
        assert_eq!(
            lines,
            [
                server.data_dir().unwrap().to_str().unwrap(),
                endpoint(&server).strip_prefix("http://").unwrap(),
                ACCESS_KEY,
            ]
        );
        check_lifecycle(server);
    }

    /// The fallback path: no endpoint, no `MinIO`, Ceph declined, so the pinned s3s-fs is
    /// started, and says it is a fallback.
    #[test]
    fn s3s_fs_is_started_readied_given_a_bucket_and_stopped() {
        let empty = tempfile::tempdir().unwrap();
        let server = start(&vars_with_path(empty.path()).with(NO_CEPH_VAR, "1")).unwrap();
        assert!(
            server.description.contains("FALLBACK"),
            "{}",
            server.description
        );
        assert_eq!(server.kind, Kind::S3sFs);
        let vars: BTreeMap<_, _> = server.vars.iter().cloned().collect();
        assert_eq!(
            vars.get(OsStr::new("PAGESTORE_S3_ENDPOINT")),
            Some(&OsString::from(endpoint(&server)))
        );
        assert_eq!(
            vars.get(OsStr::new("AWS_BUCKET")),
            Some(&OsString::from(BUCKET))
        );
        check_lifecycle(server);
    }

    /// A server that cannot start is reported with its log, after a few attempts.
    #[test]
    fn a_server_that_exits_early_is_reported_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("minio");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&bin)
            .unwrap();
        file.write_all(b"#!/bin/sh\necho 'cannot bind: address in use' >&2\nexit 1\n")
            .unwrap();
        drop(file);
        let err = start(&Vars::default().with("MINIO_BIN", &bin)).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("exited before it was ready"), "{err}");
        assert!(err.contains("cannot bind: address in use"), "{err}");
    }
}
