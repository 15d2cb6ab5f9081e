//! `cargo xtask soak [--seconds N] [--seed S]`: a bounded run of concurrent readers and
//! writers with faults and crashes, which checks every byte it reads.
//!
//! Two workloads run side by side until the deadline, each in its own scratch folder:
//!
//! - [`segments`]: a `SegmentStore` (disk cache + uploads/downloads) over a `FaultyStore`
//!   wrapping `InMemory` (errors, tail latency, lost acknowledgements, damaged bodies), with
//!   writer and reader tasks and a crash-reopen of the store every second or two.
//! - [`blocks`]: a `FileBlock` per worker thread on a temp file through a `FaultyPageIo`
//!   (failed and torn writes, failed reads and syncs, crash points), with power cuts that keep
//!   a random part of the unsynced writes, then reopen and check.
//!
//! Everything is counted in one [`Tally`]; a progress line comes every few seconds and the run
//! ends with one summary line. It fails if anything acknowledged was lost or read back wrong,
//! on any unexpected error, and when it injected no fault or survived no crash (a soak that
//! injects nothing proves nothing). Choices and data follow from the seed, though thread and
//! task timing make no two runs the same.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use self::tally::{Figures, Tally};
use crate::rng::parse_seed;
use crate::steps::fmt_bytes;

mod blocks;
mod segments;
mod tally;

/// The default length of a run.
const DEFAULT_SECONDS: u64 = 60;
/// The longest run `--seconds` accepts: a week.
const MAX_SECONDS: u64 = 7 * 24 * 3600;
/// The default seed.
const DEFAULT_SEED: u64 = 0x50A6_2024;
/// Worker threads of the block workload, one file each.
const BLOCK_WORKERS: u64 = 2;
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Options of `soak`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// How long to run, in seconds (at least 1); the final checks come after.
    pub seconds: u64,
    /// The seed of every random choice and of the data.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seconds: DEFAULT_SECONDS,
            seed: DEFAULT_SEED,
        }
    }
}

impl Options {
    /// Parses `soak`'s arguments: `--seconds N` and `--seed S` (decimal, or hex with `0x`),
    /// each also as `--name=value`.
    pub fn parse(args: &[&str]) -> anyhow::Result<Self> {
        let mut opts = Self::default();
        let mut args = args.iter();
        while let Some(&arg) = args.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (arg, None),
            };
            if name != "--seconds" && name != "--seed" {
                bail!("unknown soak option `{arg}` (see `cargo xtask help`)");
            }
            let Some(value) = inline.or_else(|| args.next().copied()) else {
                bail!("`{name}` needs a value");
            };
            if name == "--seconds" {
                opts.seconds = parse_seconds(value)?;
            } else {
                opts.seed = parse_seed(value).with_context(|| {
                    format!("`--seed {value}`: not a number (decimal, or hex with 0x)")
                })?;
            }
        }
        Ok(opts)
    }
}

fn parse_seconds(value: &str) -> anyhow::Result<u64> {
    let seconds: u64 = value
        .parse()
        .map_err(|_| anyhow::anyhow!("`--seconds {value}`: not a whole number of seconds"))?;
    if seconds == 0 {
        bail!("`--seconds 0`: a soak must run for at least 1 second");
    }
    if seconds > MAX_SECONDS {
        bail!("`--seconds {value}`: at most {MAX_SECONDS} (a week)");
    }
    Ok(seconds)
}

/// Runs `soak`: prints progress, then one summary line; fails when the soak found a problem
/// or proved nothing.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let (figures, elapsed, problems) = soak(opts)?;
    if !problems.is_empty() {
        eprintln!("soak: the first problems found:");
        for problem in &problems {
            eprintln!("  {problem}");
        }
    }
    println!("{}", figures.summary(elapsed));
    figures.verdict()
}

/// The run itself: the figures at the end, how long it took and the first problems.
fn soak(opts: &Options) -> anyhow::Result<(Figures, Duration, Vec<String>)> {
    let scratch = tempfile::Builder::new()
        .prefix("pagestore-soak-")
        .tempdir()
        .context("creating a scratch directory")?;
    let segments_dir = scratch.path().join("segments");
    let blocks_dir = scratch.path().join("blocks");
    for dir in [&segments_dir, &blocks_dir] {
        std::fs::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    println!(
        "soak: {} s, seed {:#x}, scratch {}",
        opts.seconds,
        opts.seed,
        scratch.path().display()
    );
    let tally = Arc::new(Tally::default());
    let start = Instant::now();
    let deadline = start + Duration::from_secs(opts.seconds);
    let results: Vec<anyhow::Result<()>> = thread::scope(|s| {
        let mut workers = Vec::new();
        let (dir, tally_) = (&segments_dir, Arc::clone(&tally));
        let seed = opts.seed;
        workers.push((
            "segments".to_owned(),
            s.spawn(move || segments::run(dir, seed, deadline, tally_)),
        ));
        for index in 0..BLOCK_WORKERS {
            let (dir, tally_) = (&blocks_dir, Arc::clone(&tally));
            workers.push((
                format!("blocks-{index}"),
                s.spawn(move || blocks::run(dir, index, seed, deadline, &tally_)),
            ));
        }
        let mut next_line = start + PROGRESS_EVERY;
        while workers.iter().any(|(_, w)| !w.is_finished()) {
            thread::sleep(Duration::from_millis(50));
            if Instant::now() >= next_line {
                next_line += PROGRESS_EVERY;
                progress(&tally.figures(), start.elapsed(), opts.seconds);
            }
        }
        workers
            .into_iter()
            .map(|(name, worker)| match worker.join() {
                Ok(result) => result.with_context(|| format!("soak worker {name}")),
                Err(_) => Err(anyhow::anyhow!("soak worker {name} panicked")),
            })
            .collect()
    });
    let elapsed = start.elapsed();
    for result in results {
        result?;
    }
    Ok((tally.figures(), elapsed, tally.problems()))
}

fn progress(f: &Figures, elapsed: Duration, seconds: u64) {
    let at = elapsed.as_secs();
    let when = if at <= seconds {
        format!("{at}/{seconds} s")
    } else {
        format!("{at} s, final checks")
    };
    println!(
        "soak: {when}: {} operations, {} faults, {} crashes, {} verified, lost = {}, corrupt = \
         {}",
        f.operations,
        f.faults,
        f.crashes,
        fmt_bytes(f.bytes_verified),
        f.lost,
        f.corrupt
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_values() {
        assert_eq!(Options::parse(&[]).unwrap(), Options::default());
        assert_eq!(Options::default().seconds, 60);
        let opts = Options::parse(&["--seconds", "20", "--seed", "0x10"]).unwrap();
        assert_eq!((opts.seconds, opts.seed), (20, 16));
        let opts = Options::parse(&["--seed=7", "--seconds=3"]).unwrap();
        assert_eq!((opts.seconds, opts.seed), (3, 7));
    }

    #[test]
    fn bad_arguments_are_errors_not_panics() {
        for (args, says) in [
            (&["--seconds", "0"][..], "at least 1 second"),
            (&["--seconds"][..], "needs a value"),
            (&["--seconds", "ten"][..], "not a whole number"),
            (&["--seconds", "-5"][..], "not a whole number"),
            (&["--seconds", "1.5"][..], "not a whole number"),
            (
                &["--seconds", "99999999999999999999"][..],
                "not a whole number",
            ),
            (&["--seconds=999999999"][..], "at most"),
            (&["--seed", "x"][..], "not a number"),
            (&["--seed="][..], "not a number"),
            (&["--fast"][..], "unknown soak option"),
            (&["20"][..], "unknown soak option"),
        ] {
            let err = format!("{:#}", Options::parse(args).unwrap_err());
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }

    /// A short run of the whole soak: it must inject faults, survive crashes and find nothing
    /// wrong.
    #[test]
    fn a_short_soak_passes() {
        let opts = Options {
            seconds: 2,
            seed: 1,
        };
        let (figures, _, problems) = soak(&opts).unwrap();
        assert_eq!(problems, Vec::<String>::new());
        figures.verdict().unwrap();
        assert!(figures.bytes_verified > 0, "{figures:?}");
    }
}
