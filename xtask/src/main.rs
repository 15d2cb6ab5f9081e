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
mod ci;
mod demo;
mod process;
mod s3;
mod steps;
mod test_all;

const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  test-all [--no-fail-fast]
      Every test of the workspace: nextest over all targets (examples and benches are built),
      doctests, the shuttle model-checking pass of pagecache, then objsync's S3 suite against
      an S3 server: the endpoint in PAGESTORE_S3_ENDPOINT / AWS_ENDPOINT[_URL] (with AWS_BUCKET
      and keys), else `minio` (MINIO_BIN or PATH), else s3s-fs (installed into .tools on first
      use). Prints a summary.
  ci [--no-fail-fast]
      cargo fmt --check, clippy with warnings denied (also with pagecache's `shuttle` feature),
      then test-all.
  bench [--quick] [CRATE...]
      Runs the criterion benches of CRATE (default: every member with benches), writes
      target/bench/results.json (rows of other crates are kept) and prints the table.
      --quick: criterion's quick mode with short warm-up and measurement.
  demo
      The main job at small scale on a temp file: pages written through a small cache
      (write-back on eviction), flushed, reopened, verified, then read with a skewed key mix.
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
        "bench" => bench::run(&bench::Options::parse(rest)?),
        "demo" => {
            no_args(command, rest)?;
            demo::run()
        }
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

fn no_args(command: &str, rest: &[&str]) -> anyhow::Result<()> {
    if let Some(arg) = rest.first() {
        bail!("`{command}` takes no arguments, got `{arg}` (see `cargo xtask help`)");
    }
    Ok(())
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
