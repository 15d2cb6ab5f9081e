//! `cargo xtask s3 up | down | env`: the Ceph cluster of `test-all` ([`crate::ceph`]), started
//! for a person to use with `demo --s3` or the S3 suite, and stopped again.
//!
//! `up` starts it detached in `target/s3-cluster` (installing the packages on first use) and
//! prints the variables to use as `export` lines on standard output, so
//! `eval "$(cargo xtask s3 up)"` sets them; `env` prints them again; `down` stops the daemons by
//! the pids `up` recorded and removes the directory.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::ceph;
use crate::s3;

/// How long a daemon gets to exit after SIGTERM before `down` kills it.
const DOWN_GRACE: Duration = Duration::from_secs(10);

/// What `s3` was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Options {
    /// Start the cluster (or say it runs) and print its variables.
    Up,
    /// Stop the cluster.
    Down,
    /// Print the variables of the running cluster.
    Env,
}

impl Options {
    /// Parses `up`, `down` or `env`.
    pub fn parse(args: &[&str]) -> anyhow::Result<Self> {
        match args {
            ["up"] => Ok(Self::Up),
            ["down"] => Ok(Self::Down),
            ["env"] => Ok(Self::Env),
            _ => bail!("usage: cargo xtask s3 up | down | env"),
        }
    }
}

/// Runs `s3 up`, `s3 down` or `s3 env`.
pub fn run(opts: Options) -> anyhow::Result<()> {
    let dir = ceph::up_dir();
    match opts {
        Options::Up => up(&dir),
        Options::Down => {
            let stopped = ceph::down(&dir, DOWN_GRACE)?;
            eprintln!(
                "xtask: s3 down: stopped {stopped} Ceph daemons, removed {}",
                dir.display()
            );
            Ok(())
        }
        Options::Env => {
            print!("{}", read_env(&dir)?);
            Ok(())
        }
    }
}

fn up(dir: &Path) -> anyhow::Result<()> {
    if let Ok(env) = read_env(dir) {
        eprintln!(
            "xtask: s3 up: the cluster in {} is already up (`cargo xtask s3 down` stops it)",
            dir.display()
        );
        print!("{env}");
        return Ok(());
    }
    // Whatever a crashed `up` left.
    ceph::down(dir, DOWN_GRACE)?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let install = ceph::ensure_installed(&path)?;
    if let Some(took) = install.installed_in {
        eprintln!(
            "xtask: s3 up: installed Ceph in {}",
            crate::steps::fmt_duration(took)
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let account = ceph::Account {
        access_key: s3::ACCESS_KEY,
        secret_key: s3::SECRET_KEY,
        bucket: s3::BUCKET,
        region: s3::REGION,
    };
    let cluster = match ceph::start(dir, account, ceph::Mode::Detached) {
        Ok(cluster) => cluster,
        Err(err) => {
            let _ = std::fs::remove_dir_all(dir);
            return Err(err);
        }
    };
    ceph::write_pids(dir, &cluster).context("recording the daemons' pids")?;
    let env = s3::local_vars(&cluster.endpoint, "ceph-rgw")
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .fold(String::new(), |mut s, (k, v)| {
            let _ = writeln!(s, "export {}={}", k.display(), v.display());
            s
        });
    std::fs::write(dir.join("env"), &env).context("writing the cluster's variables")?;
    eprintln!(
        "xtask: s3 up: Ceph RGW {} at {} (bucket {}) started in {}; data in {}; stop it with \
         `cargo xtask s3 down`",
        ceph::version().unwrap_or_default(),
        cluster.endpoint,
        s3::BUCKET,
        crate::steps::fmt_duration(cluster.started_in),
        dir.display()
    );
    print!("{env}");
    Ok(())
}

/// The `export` lines of the cluster in `dir`, if it is up (its recorded gateway answers).
fn read_env(dir: &Path) -> anyhow::Result<String> {
    let env = std::fs::read_to_string(dir.join("env")).with_context(|| {
        format!(
            "no cluster is up in {} (`cargo xtask s3 up`)",
            dir.display()
        )
    })?;
    let endpoint = env
        .lines()
        .find_map(|l| l.strip_prefix("export PAGESTORE_S3_ENDPOINT=http://"))
        .context("the cluster's variables name no endpoint")?;
    let addr = endpoint
        .parse()
        .with_context(|| format!("the cluster's endpoint {endpoint} is not an address"))?;
    if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_err() {
        bail!(
            "the cluster recorded in {} no longer answers",
            dir.display()
        );
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        assert_eq!(Options::parse(&["up"]).unwrap(), Options::Up);
        assert_eq!(Options::parse(&["down"]).unwrap(), Options::Down);
        assert_eq!(Options::parse(&["env"]).unwrap(), Options::Env);
        assert!(Options::parse(&[]).is_err());
        assert!(Options::parse(&["up", "now"]).is_err());
    }

    #[test]
    fn env_of_a_cluster_that_is_not_up_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_env(dir.path()).is_err());
        // Recorded, but nothing listens there.
        let addr = s3::free_loopback_addr().unwrap();
        std::fs::write(
            dir.path().join("env"),
            format!("export PAGESTORE_S3_ENDPOINT=http://{addr}\n"),
        )
        .unwrap();
        assert!(read_env(dir.path()).is_err());
    }
}
