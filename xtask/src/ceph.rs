//! A throwaway single-node Ceph cluster with a RADOS Gateway: a production S3 implementation for
//! objsync's S3 suite on machines that have no `MinIO` (see [`crate::s3`] for the order).
//!
//! Pacific's `radosgw` (Debian 12 ships Ceph 16.2) has no standalone backend: it needs RADOS, so
//! the cluster is one monitor, one OSD and the gateway, all on 127.0.0.1, run as the current
//! (root) user without systemd, in one directory:
//! - keys made with `ceph-authtool` (cephx), a monmap with `monmaptool`, `ceph-mon --mkfs`;
//! - no manager daemon; the OSD keeps objects in memory (`osd objectstore = memstore`), pools
//!   have one replica and few placement groups, and the warnings about that are off;
//! - `radosgw` with the beast front end on a free loopback port, with `tcp_nodelay=1`: without
//!   it every small GET on a reused connection waits for a delayed ACK (about 44 ms here);
//! - an S3 user with the test keys (`radosgw-admin user create`), and the bucket, made by a
//!   SigV4-signed `PUT /<bucket>` (xtask has no S3 client; [`sigv4`] is the few lines needed).
//!
//! The packages are installed on first use with `apt-get` (about 70 MB, 30–60 s), which needs
//! root; a machine where that cannot be done gets s3s-fs instead, said loudly by the caller.
//! From nothing to a working PUT/GET takes about 20 s. Every daemon runs in the foreground
//! (`-f`) as a child of xtask, so it is owned by a [`ChildGuard`] and stopped on every exit path;
//! `cargo xtask s3 up` starts the same cluster detached instead, for a person to use, and
//! `s3 down` stops it by the pids it recorded.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};

use crate::process::ChildGuard;

/// The Debian packages that hold the daemons and tools.
pub const PACKAGES: &[&str] = &["radosgw", "ceph-mon", "ceph-osd", "ceph-common"];
/// The programs the cluster needs, all from [`PACKAGES`].
const PROGRAMS: &[&str] = &[
    "ceph-mon",
    "ceph-osd",
    "radosgw",
    "radosgw-admin",
    "ceph-authtool",
    "monmaptool",
    "ceph",
];
/// How long the monitor, then the gateway, get to answer.
const READY_TIMEOUT: Duration = Duration::from_mins(2);
/// How long one `ceph` or `radosgw-admin` call may take before it is given up.
const TOOL_TIMEOUT: Duration = Duration::from_mins(1);
/// The memory store's capacity: the suite writes far less, and the OSD refuses writes near it.
const MEMSTORE_BYTES: u64 = 8 << 30;

/// Whether the Ceph programs are here, and whether they were installed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    /// Installed by this call (with how long it took), rather than found.
    pub installed_in: Option<Duration>,
}

/// Finds the Ceph programs on `path`, or installs [`PACKAGES`] with `apt-get` when they are
/// missing and this process is root. Fails, saying why, when neither works: the caller then
/// falls back to s3s-fs.
pub fn ensure_installed(path: &OsStr) -> anyhow::Result<Install> {
    let missing = missing_programs(path);
    if missing.is_empty() {
        return Ok(Install { installed_in: None });
    }
    if !rustix::process::geteuid().is_root() {
        bail!(
            "the Ceph programs are not installed ({} missing) and installing them needs root \
             (apt-get install {})",
            missing.join(", "),
            PACKAGES.join(" ")
        );
    }
    let Some(apt) = crate::s3::find_on_path("apt-get", path) else {
        bail!(
            "the Ceph programs are not installed ({} missing) and there is no apt-get",
            missing.join(", ")
        );
    };
    eprintln!(
        "xtask: installing Ceph for the S3 suite (first use; about 70 MB): apt-get install {}",
        PACKAGES.join(" ")
    );
    let started = Instant::now();
    let log = tempfile::NamedTempFile::new().context("creating the apt-get log")?;
    let apt_run = |args: &[&str]| -> anyhow::Result<()> {
        let mut cmd = Command::new(&apt);
        cmd.args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(log.reopen()?)
            .stderr(log.reopen()?);
        let status = ChildGuard::spawn(format!("apt-get {}", args[0]), cmd)?
            .wait()
            .context("waiting for apt-get")?;
        if !status.success() {
            bail!(
                "`apt-get {}` failed ({status}):\n{}",
                args.join(" "),
                crate::s3::log_tail(log.path())
            );
        }
        Ok(())
    };
    apt_run(&["update", "-qq"])?;
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(PACKAGES);
    apt_run(&install)?;
    let missing = missing_programs(path);
    if !missing.is_empty() {
        bail!(
            "after apt-get install, {} are still missing",
            missing.join(", ")
        );
    }
    Ok(Install {
        installed_in: Some(started.elapsed()),
    })
}

fn missing_programs(path: &OsStr) -> Vec<&'static str> {
    PROGRAMS
        .iter()
        .copied()
        .filter(|p| crate::s3::find_on_path(p, path).is_none())
        .collect()
}

/// The gateway's version, e.g. `16.2.15 pacific`, if `radosgw --version` runs.
pub fn version() -> Option<String> {
    let out = Command::new("radosgw")
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    // "ceph version 16.2.15 (618f4408…) pacific (stable)"
    let mut words = text.split_whitespace().skip(2);
    let number = words.next()?;
    let name = words.nth(1).unwrap_or_default();
    Some(format!("{number} {name}").trim().to_owned())
}

/// How a daemon is run: as a guarded child of xtask, or detached (for `s3 up`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A [`ChildGuard`] stops it with xtask.
    Guarded,
    /// Its own process group, no parent-death signal: it outlives xtask until `s3 down`.
    Detached,
}

/// A started daemon.
#[derive(Debug)]
pub enum Daemon {
    /// Owned by xtask, stopped when dropped.
    Guarded(ChildGuard),
    /// Left running; its pid is recorded in the cluster directory.
    Detached(Child),
}

impl Daemon {
    fn is_running(&mut self) -> io::Result<bool> {
        match self {
            Daemon::Guarded(guard) => guard.is_running(),
            Daemon::Detached(child) => Ok(child.try_wait()?.is_none()),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Daemon::Guarded(guard) => guard.id(),
            Daemon::Detached(child) => child.id(),
        }
    }
}

/// A running cluster: its daemons (gateway first: the order to stop them in), where the gateway
/// listens and how long it took to start.
#[derive(Debug)]
pub struct Cluster {
    /// Gateway, OSD, monitor: dropped (stopped) in this order.
    pub daemons: Vec<Daemon>,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// From the first command to the bucket.
    pub started_in: Duration,
}

/// The S3 credentials and bucket the cluster serves.
#[derive(Debug, Clone, Copy)]
pub struct Account<'a> {
    /// The access key id.
    pub access_key: &'a str,
    /// The secret key.
    pub secret_key: &'a str,
    /// The bucket created in it.
    pub bucket: &'a str,
    /// The region the signatures name.
    pub region: &'a str,
}

/// Starts a cluster in `dir` (an empty directory it owns) serving `account`. On error every
/// daemon started so far is stopped (guarded) or killed (detached) before returning.
pub fn start(dir: &Path, account: Account<'_>, mode: Mode) -> anyhow::Result<Cluster> {
    let started = Instant::now();
    let mut daemons = Vec::new();
    match start_daemons(dir, account, mode, &mut daemons) {
        Ok(endpoint) => {
            // Stop order: the gateway, the OSD, the monitor.
            daemons.reverse();
            Ok(Cluster {
                daemons,
                endpoint,
                started_in: started.elapsed(),
            })
        }
        Err(err) => {
            stop_all(&mut daemons);
            Err(err.context(format!("starting Ceph in {}", dir.display())))
        }
    }
}

/// Kills daemons that did not make a cluster (detached ones too: nobody would stop them).
fn stop_all(daemons: &mut Vec<Daemon>) {
    while let Some(daemon) = daemons.pop() {
        if let Daemon::Detached(mut child) = daemon {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A guarded one stops as it drops here.
    }
}

/// The steps of [`start`]; returns the endpoint. Daemons go into `daemons` as they start.
fn start_daemons(
    dir: &Path,
    account: Account<'_>,
    mode: Mode,
    daemons: &mut Vec<Daemon>,
) -> anyhow::Result<String> {
    for sub in ["mon/a", "osd/0", "run", "log", "rgw"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("creating {}", dir.join(sub).display()))?;
    }
    let mon = crate::s3::free_loopback_addr().context("finding a port for the monitor")?;
    let rgw = crate::s3::free_loopback_addr().context("finding a port for the gateway")?;
    let fsid = random_uuid().context("making the cluster's fsid")?;
    let conf = dir.join("ceph.conf");
    std::fs::write(&conf, config(dir, &fsid, mon, rgw)).context("writing ceph.conf")?;
    let path = |name: &str| dir.join(name);
    let tool = Tool { dir, conf: &conf };

    tool.run(
        Command::new("monmaptool")
            .args(["--create", "--addv", "a"])
            .arg(format!("[v1:{mon}]"))
            .args(["--fsid", &fsid])
            .arg(path("monmap")),
    )?;
    tool.run(
        Command::new("ceph-authtool")
            .arg("--create-keyring")
            .arg(path("mon..keyring"))
            .args(["--gen-key", "-n", "mon.", "--cap", "mon", "allow *"]),
    )?;
    tool.run(
        Command::new("ceph-authtool")
            .arg("--create-keyring")
            .arg(path("client.admin.keyring"))
            .args(["--gen-key", "-n", "client.admin"])
            .args(["--cap", "mon", "allow *", "--cap", "osd", "allow *"])
            .args(["--cap", "mgr", "allow *"]),
    )?;
    tool.run(
        Command::new("ceph-authtool")
            .arg(path("mon..keyring"))
            .arg("--import-keyring")
            .arg(path("client.admin.keyring")),
    )?;
    tool.run(
        tool.ceph("ceph-mon")
            .args(["--mkfs", "-i", "a", "--monmap"])
            .arg(path("monmap"))
            .arg("--keyring")
            .arg(path("mon..keyring")),
    )?;
    daemons.push(tool.spawn("ceph-mon", ["-i", "a", "-f"], mode)?);

    // The monitor answers once `ceph` can talk to it: the OSD's id is the first request.
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        check_running(daemons, dir)?;
        match tool.run(
            tool.ceph("ceph")
                .args(["--connect-timeout", "5", "osd", "create"]),
        ) {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(250)),
            Err(err) => return Err(err.context("the monitor does not answer")),
        }
    }
    tool.run(
        tool.ceph("ceph")
            .args(["auth", "get-or-create", "osd.0", "mon", "allow profile osd"])
            .args(["osd", "allow *", "-o"])
            .arg(path("osd.0.keyring")),
    )?;
    tool.run(tool.ceph("ceph-osd").args(["-i", "0", "--mkfs"]))?;
    daemons.push(tool.spawn("ceph-osd", ["-i", "0", "-f"], mode)?);
    tool.run(
        tool.ceph("ceph")
            .args(["auth", "get-or-create", "client.rgw.a", "mon", "allow rw"])
            .args(["osd", "allow rwx", "-o"])
            .arg(path("client.rgw.a.keyring")),
    )?;
    daemons.push(tool.spawn("radosgw", ["-n", "client.rgw.a", "-f"], mode)?);

    // The gateway answers an anonymous `GET /` (an empty bucket list) once it has its pools.
    loop {
        check_running(daemons, dir)?;
        match http_status(rgw, "GET", "/", &[]) {
            Ok(status) if status < 500 => break,
            _ if Instant::now() < deadline => thread::sleep(Duration::from_millis(250)),
            Ok(status) => bail!("the gateway still answers {status} after {READY_TIMEOUT:?}"),
            Err(err) => bail!("the gateway does not answer on {rgw} ({err})"),
        }
    }
    tool.run(
        tool.ceph("radosgw-admin")
            .args(["-n", "client.admin", "user", "create", "--uid=pagestore"])
            .args(["--display-name=pagestore"])
            .arg(format!("--access-key={}", account.access_key))
            .arg(format!("--secret={}", account.secret_key)),
    )?;
    create_bucket(rgw, account, deadline)?;
    Ok(format!("http://{rgw}"))
}

/// Fails with the daemons' logs if one of them has exited.
fn check_running(daemons: &mut [Daemon], dir: &Path) -> anyhow::Result<()> {
    for daemon in daemons.iter_mut() {
        if !daemon.is_running().context("checking a Ceph daemon")? {
            bail!(
                "a Ceph daemon exited; its logs:\n{}",
                logs_tail(&dir.join("log"))
            );
        }
    }
    Ok(())
}

/// The last lines of every log in `dir`, for error messages.
fn logs_tail(dir: &Path) -> String {
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        paths.sort();
        for path in paths {
            let _ = writeln!(
                out,
                "--- {}\n{}",
                path.display(),
                crate::s3::log_tail(&path)
            );
        }
    }
    out
}

/// Runs the cluster's one-shot commands and starts its daemons, with the config and logs in
/// the cluster directory.
struct Tool<'a> {
    dir: &'a Path,
    conf: &'a Path,
}

impl Tool<'_> {
    /// A Ceph program with `-c <conf>`.
    fn ceph(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("-c").arg(self.conf);
        cmd
    }

    /// Runs `cmd` to completion (within [`TOOL_TIMEOUT`]) and returns its standard output;
    /// fails with its output when it fails.
    fn run(&self, cmd: &mut Command) -> anyhow::Result<String> {
        let name = cmd.get_program().to_string_lossy().into_owned();
        let out_path = self.dir.join("log").join(format!("{name}.out"));
        let out = File::create(&out_path).context("creating a tool's output file")?;
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .current_dir(self.dir);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut guard = ChildGuard::spawn_mut(name.clone(), cmd)?;
        let deadline = Instant::now() + TOOL_TIMEOUT;
        while guard.is_running()? {
            if Instant::now() >= deadline {
                bail!(
                    "`{name} {}` did not finish in {TOOL_TIMEOUT:?}",
                    args.join(" ")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        let status = guard.wait()?;
        let mut output = String::new();
        File::open(&out_path)?.read_to_string(&mut output)?;
        if !status.success() {
            bail!(
                "`{name} {}` failed ({status}):\n{}",
                args.join(" "),
                output.trim_end()
            );
        }
        Ok(output)
    }

    /// Starts daemon `program` in the foreground with `args`, its output in the log dir.
    fn spawn<const N: usize>(
        &self,
        program: &str,
        args: [&str; N],
        mode: Mode,
    ) -> anyhow::Result<Daemon> {
        let log = File::create(self.dir.join("log").join(format!("{program}.out")))
            .context("creating a daemon's log")?;
        let mut cmd = self.ceph(program);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(self.dir);
        Ok(match mode {
            Mode::Guarded => Daemon::Guarded(ChildGuard::spawn(program, cmd)?),
            Mode::Detached => {
                // Its own process group: a Ctrl-C in the terminal that ran `s3 up` does not
                // reach it.
                cmd.process_group(0);
                Daemon::Detached(
                    cmd.spawn()
                        .with_context(|| format!("cannot start {program}"))?,
                )
            }
        })
    }
}

/// The cluster's configuration: one monitor on `mon`, one memory-backed OSD, the gateway on
/// `rgw`, everything kept in `dir`.
fn config(dir: &Path, fsid: &str, mon: SocketAddr, rgw: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "\
[global]
fsid = {fsid}
mon host = v1:{mon}
mon initial members = a
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
keyring = {d}/$name.keyring
ms bind ipv6 = false
ms bind msgr2 = false
run dir = {d}/run
admin socket = {d}/run/$name.asok
log file = {d}/log/$name.log
osd objectstore = memstore
memstore device bytes = {MEMSTORE_BYTES}
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
# A nearly full disk must not stop the throwaway monitor (it keeps almost nothing there).
mon data avail warn = 1
mon data avail crit = 0

[mon.a]
mon data = {d}/mon/a

[osd.0]
osd data = {d}/osd/0

[client.rgw.a]
rgw frontends = beast endpoint={rgw} tcp_nodelay=1
rgw data = {d}/rgw
"
    )
}

/// A random version-4 UUID, from the kernel's generator.
fn random_uuid() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex = bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    });
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

/// Creates the bucket with a signed `PUT /<bucket>`, retrying while the gateway answers 5xx
/// (it creates its data pools on the first write) until `deadline`.
fn create_bucket(rgw: SocketAddr, account: Account<'_>, deadline: Instant) -> anyhow::Result<()> {
    loop {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .context("the clock is before 1970")?;
        let headers = sigv4::sign(&sigv4::Request {
            method: "PUT",
            path: &format!("/{}", account.bucket),
            host: &rgw.to_string(),
            access_key: account.access_key,
            secret_key: account.secret_key,
            region: account.region,
            service: "s3",
            unix_seconds: now.as_secs(),
            extra_headers: &[],
        });
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        match http_status(rgw, "PUT", &format!("/{}", account.bucket), &headers) {
            Ok(200) => return Ok(()),
            Ok(status) if status >= 500 && Instant::now() < deadline => {}
            Err(_) if Instant::now() < deadline => {}
            Ok(status) => bail!("creating bucket {} answered {status}", account.bucket),
            Err(err) => return Err(err).context("creating the bucket"),
        }
        thread::sleep(Duration::from_millis(500));
    }
}

/// Sends one HTTP/1.1 request with no body and returns the status code.
fn http_status(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<u16> {
    let timeout = Duration::from_secs(10);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        let _ = write!(request, "{name}: {value}\r\n");
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    crate::s3::parse_status_line(&line).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not an HTTP status line: {line:?}"),
        )
    })
}

/// Where `s3 up` keeps its cluster: the directory, the pids to stop and the variables to use.
pub fn up_dir() -> PathBuf {
    crate::project_root().join("target").join("s3-cluster")
}

/// The pids of a detached cluster's daemons, gateway first, written by `s3 up`.
pub fn write_pids(dir: &Path, cluster: &Cluster) -> io::Result<()> {
    let pids = cluster.daemons.iter().fold(String::new(), |mut s, d| {
        let _ = writeln!(s, "{}", d.pid());
        s
    });
    std::fs::write(dir.join("pids"), pids)
}

/// Stops a detached cluster by its recorded pids (SIGTERM, then SIGKILL after `grace`) and
/// removes its directory. Returns how many daemons were still running.
pub fn down(dir: &Path, grace: Duration) -> anyhow::Result<usize> {
    let pids = match std::fs::read_to_string(dir.join("pids")) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => String::new(),
        Err(err) => return Err(err).context("reading the cluster's pids"),
    };
    let mut running = 0;
    for pid in pids.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let Some(pid) = rustix::process::Pid::from_raw(pid) else {
            continue;
        };
        if !is_our_daemon(pid, dir) {
            continue;
        }
        running += 1;
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + grace;
        while rustix::process::test_kill_process(pid).is_ok() && is_our_daemon(pid, dir) {
            if Instant::now() >= deadline {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(running)
}

/// Whether `pid` is a Ceph daemon of the cluster in `dir` (its command line names the config
/// there), so a recycled pid is never signalled.
fn is_our_daemon(pid: rustix::process::Pid, dir: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{}/cmdline", pid.as_raw_nonzero())) else {
        return false;
    };
    let conf = dir.join("ceph.conf");
    cmdline
        .split(|&b| b == 0)
        .any(|arg| Path::new(OsStr::from_bytes(arg)) == conf)
}

/// AWS Signature Version 4 for a request without a body: the headers to send.
pub mod sigv4 {
    use std::fmt::Write as _;

    use ring::{digest, hmac};

    /// What a signature covers.
    #[derive(Debug)]
    pub struct Request<'a> {
        /// `GET`, `PUT`…
        pub method: &'a str,
        /// The absolute path, already URI-encoded (no query string).
        pub path: &'a str,
        /// The `Host` header's value.
        pub host: &'a str,
        /// The access key id.
        pub access_key: &'a str,
        /// The secret key.
        pub secret_key: &'a str,
        /// The region, e.g. `us-east-1`.
        pub region: &'a str,
        /// The service, `s3`.
        pub service: &'a str,
        /// The signing time.
        pub unix_seconds: u64,
        /// More headers to sign (lower-case names), e.g. `range`.
        pub extra_headers: &'a [(&'a str, &'a str)],
    }

    /// The SHA-256 of an empty body, hex.
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// The headers to send: `x-amz-date`, `x-amz-content-sha256`, the extra ones and
    /// `Authorization` (`Host` is sent by the caller, with the same value).
    #[must_use]
    pub fn sign(req: &Request<'_>) -> Vec<(String, String)> {
        let (date, stamp) = timestamp(req.unix_seconds);
        let mut headers: Vec<(String, String)> = vec![
            ("host".into(), req.host.into()),
            ("x-amz-content-sha256".into(), EMPTY_SHA256.into()),
            ("x-amz-date".into(), stamp.clone()),
        ];
        headers.extend(
            req.extra_headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).trim().to_owned())),
        );
        headers.sort();
        let signed: Vec<&str> = headers.iter().map(|(k, _)| k.as_str()).collect();
        let signed = signed.join(";");
        let mut canonical = format!("{}\n{}\n\n", req.method, req.path);
        for (k, v) in &headers {
            let _ = writeln!(canonical, "{k}:{v}");
        }
        let _ = write!(canonical, "\n{signed}\n{EMPTY_SHA256}");
        let scope = format!("{date}/{}/{}/aws4_request", req.region, req.service);
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
        );
        let mut key = format!("AWS4{}", req.secret_key).into_bytes();
        for part in [date.as_str(), req.region, req.service, "aws4_request"] {
            key = mac(&key, part.as_bytes());
        }
        let signature = hex(&mac(&key, to_sign.as_bytes()));
        let mut out: Vec<(String, String)> =
            headers.into_iter().filter(|(k, _)| k != "host").collect();
        out.push((
            "Authorization".into(),
            format!(
                "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, \
                 Signature={signature}",
                req.access_key
            ),
        ));
        out
    }

    fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data)
            .as_ref()
            .to_vec()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }

    /// `YYYYMMDD` and `YYYYMMDDTHHMMSSZ` of a Unix time (UTC).
    pub(super) fn timestamp(unix_seconds: u64) -> (String, String) {
        let days = unix_seconds / 86_400;
        let secs = unix_seconds % 86_400;
        let (y, m, d) = civil_from_days(days);
        let date = format!("{y:04}{m:02}{d:02}");
        let stamp = format!(
            "{date}T{:02}{:02}{:02}Z",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        );
        (date, stamp)
    }

    /// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
    /// `civil_from_days`, for days on or after the epoch).
    fn civil_from_days(days: u64) -> (u64, u64, u64) {
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + u64::from(m <= 2);
        (y, m, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's worked example of a signed S3 GET (the `GetObject` example of "Signature
    /// Calculations for the Authorization Header"): the signature must match to the digit.
    #[test]
    fn sigv4_matches_the_aws_example() {
        // 2013-05-24T00:00:00Z
        let headers = sigv4::sign(&sigv4::Request {
            method: "GET",
            path: "/test.txt",
            host: "examplebucket.s3.amazonaws.com",
            access_key: "AKIAIOSFODNN7EXAMPLE",
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            region: "us-east-1",
            service: "s3",
            unix_seconds: 1_369_353_600,
            extra_headers: &[("range", "bytes=0-9")],
        });
        let auth = &headers
            .iter()
            .find(|(k, _)| k == "Authorization")
            .expect("an Authorization header")
            .1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/\
             aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(
            sigv4::timestamp(0),
            ("19700101".into(), "19700101T000000Z".into())
        );
        // 2024-02-29 23:59:59 (a leap day).
        assert_eq!(sigv4::timestamp(1_709_251_199).1, "20240229T235959Z");
        // 2026-12-31 12:34:56.
        assert_eq!(sigv4::timestamp(1_798_720_496).1, "20261231T123456Z");
    }

    #[test]
    fn the_config_puts_everything_in_the_dir_and_on_loopback() {
        let dir = Path::new("/tmp/some-cluster");
        let mon: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        let rgw: SocketAddr = "127.0.0.1:4001".parse().unwrap();
        let conf = config(dir, "f5d6-…", mon, rgw);
        assert!(conf.contains("mon host = v1:127.0.0.1:4000"));
        assert!(conf.contains("rgw frontends = beast endpoint=127.0.0.1:4001 tcp_nodelay=1"));
        assert!(conf.contains("osd objectstore = memstore"));
        for line in conf.lines().filter(|l| l.contains(" = /")) {
            assert!(line.contains("/tmp/some-cluster/"), "{line}");
        }
    }

    #[test]
    fn uuids_are_version_4() {
        let id = random_uuid().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, random_uuid().unwrap());
    }

    #[test]
    fn down_without_a_cluster_does_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cluster = dir.path().join("cluster");
        assert_eq!(down(&cluster, Duration::from_secs(1)).unwrap(), 0);
        std::fs::create_dir(&cluster).unwrap();
        // A recorded pid that is not one of ours (this test's own) is never signalled.
        std::fs::write(cluster.join("pids"), format!("{}\n", std::process::id())).unwrap();
        assert_eq!(down(&cluster, Duration::from_secs(1)).unwrap(), 0);
        assert!(!cluster.exists());
    }
}
