//! Workspace automation for pagestore, run as `cargo xtask <command>` (an alias in
//! `.cargo/config.toml`).
//!
//! One module per command, each with a `run` function; `steps` and `process` are the shared
//! machinery for running cargo and owning child processes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::bail;

mod bench;
mod ceph;
mod ci;
mod demo;
mod miri;
mod process;
mod rng;
mod s3;
mod s3_cmd;
mod soak;
mod steps;
mod test_all;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test-all [--no-fail-fast]
      Every test of the workspace: nextest over all targets (examples and benches are built),
      doctests, the shuttle model tests of pagecache and segcache (built with
      RUSTFLAGS=\"--cfg shuttle\" in target/shuttle), the runs of `miri` when a nightly
      toolchain is here (else the Miri step is skipped, with a warning and a note saying why),
      a 10 s soak, then objsync's S3 suite against an S3 server: the endpoint in
      PAGESTORE_S3_ENDPOINT / AWS_ENDPOINT[_URL] (with AWS_BUCKET and keys), else `minio`
      (MINIO_BIN or PATH), else a throwaway Ceph cluster with its RADOS Gateway (Debian's
      packages installed on first use, as root), else — said loudly, or when
      PAGESTORE_S3_NO_CEPH is set — s3s-fs (installed into .tools on first use). Prints which
      server, its version and start time, and a summary.
  ci [--no-fail-fast]
      cargo fmt --check, clippy with warnings denied (also of pagecache and segcache built with
      --cfg shuttle), cargo doc with warnings denied, then test-all; here a Miri that cannot
      run fails the run.
  miri [--no-fail-fast]
      The tests of the unsafe code, interpreted by Miri under Stacked Borrows and again under
      Tree Borrows (MIRIFLAGS=-Zmiri-tree-borrows, after your own MIRIFLAGS): pagecache and
      blockcache (`cargo +nightly miri test -p CRATE --lib --test miri`) and segcache's
      mapping (its `map::tests`, with -Zmiri-disable-isolation: they use files). Needs
      rustup's nightly toolchain: adds its miri and rust-src components when missing and runs
      `cargo +nightly miri setup`; fails, saying why, when that cannot be done. Builds in
      target/miri; prints each run's time.
  bench [--quick] [CRATE...]
      Runs the criterion benches of CRATE (default: every member with benches), writes
      target/bench/results.json (rows of other crates are kept) and prints the table.
      A full run also writes BENCHMARKS.md at the root: every row, its goal, whether it is
      met, and the machine.
      --quick: criterion's quick mode with short warm-up and measurement; no BENCHMARKS.md.
  demo [--s3]
      Every layer as a user runs it, at small scale on embedded defaults (temp files and an
      in-memory object store): pages through a write-back cache; fileblock over a file and over
      ObjectPageIo (allocate, write, free, compact, reopen, verify); a SegmentStore putting,
      evicting and reading back segments. Every byte read is checked; ends with a summary table.
      --s3: the object store is the S3 endpoint in PAGESTORE_S3_ENDPOINT / AWS_ENDPOINT[_URL]
      (with AWS_BUCKET and keys), e.g. MinIO; the run's objects are deleted afterwards.
  soak [--seconds N] [--seed S]
      Concurrent readers and writers for N seconds (default 60) over a SegmentStore (on an
      object store injecting errors, tail latency and lost acknowledgements) and over fileblock
      files (on a page backend injecting failed and torn writes), with crash-reopen cycles;
      every byte read is checked. Ends with one line of figures; fails if anything
      acknowledged was lost or corrupt, or if no fault or crash happened. S: the seed
      (decimal or 0x hex). test-all runs a 10 s soak.
  s3 up | down | env
      up: starts the Ceph RGW cluster test-all uses, detached, in target/s3-cluster
      (installing it on first use) and prints `export` lines for demo --s3 and the S3 suite:
      eval \"$(cargo xtask s3 up)\". env: prints them again. down: stops its daemons.
  help
      This text.
";

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(args: &[OsString]) -> anyhow::Result<()> {
    let args: Vec<&str> = args
        .iter()
        .map(|arg| {
            arg.to_str()
                .ok_or_else(|| anyhow::anyhow!("argument `{}` is not UTF-8", arg.display()))
        })
        .collect::<anyhow::Result<_>>()?;
    let Some((&command, rest)) = args.split_first() else {
        print!("{USAGE}");
        return Ok(());
    };
    match command {
        "test-all" => test_all::run(&test_all::Options::parse(rest)?),
        "ci" => ci::run(&test_all::Options::parse(rest)?),
        "miri" => miri::run(&test_all::Options::parse(rest)?),
        "bench" => bench::run(&bench::Options::parse(rest)?),
        "demo" => demo::run(&demo::Options::parse(rest)?),
        "soak" => soak::run(&soak::Options::parse(rest)?),
        "s3" => s3_cmd::run(s3_cmd::Options::parse(rest)?),
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            eprint!("{USAGE}");
            bail!("unknown command `{other}`")
        }
    }
}

/// The workspace root: the parent of this crate's manifest directory.
///
/// # Panics
///
/// If xtask's manifest directory has no parent, which a build of this workspace rules out.
#[must_use]
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The cargo that runs xtask (`$CARGO`, set by `cargo run`), or `cargo` from `PATH`.
#[must_use]
pub fn cargo() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// A `cargo` command running in the workspace root.
#[must_use]
pub fn cargo_command() -> Command {
    let mut cmd = Command::new(cargo());
    cmd.current_dir(project_root());
    cmd
}
