//! `cargo xtask demo`: the main job of each layer, end to end at small scale, on embedded
//! defaults (temp files and an in-memory object store, no server, no setup).
//!
//! The demo is a list of [`Section`]s, one per stack of layers, each working in its own folder
//! of one scratch directory, printing what it did and returning its [`Figures`] for the summary
//! table at the end. Each section checks its results (every byte read back is compared) and
//! fails the demo when something is off. A new layer adds a module with a
//! `run(&Context) -> anyhow::Result<Figures>` and a line in [`SECTIONS`].
//!
//! `--s3` puts the object sections on the S3 server named by the environment (see
//! [`remote::s3_config`]) instead of `InMemory`, under a prefix of the run's own that is
//! deleted at the end.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

mod blocks;
mod objblocks;
mod pages;
mod progress;
mod remote;
mod segments;

use crate::rng::Rng;
use crate::steps::fmt_bytes;
use progress::Progress;
use remote::Remote;

/// One part of the demo.
#[derive(Clone, Copy)]
struct Section {
    /// A folder name for the section's files (and its objects' prefix), also its row in the
    /// summary.
    name: &'static str,
    /// What the section shows, for the heading.
    title: &'static str,
    /// Does the work in the context's (empty) folder, prints what it did and returns its
    /// figures.
    run: fn(&Context<'_>) -> anyhow::Result<Figures>,
}

const SECTIONS: &[Section] = &[
    Section {
        name: "pages",
        title: "pageio + pagecache: a file of pages behind a write-back LRU cache",
        run: pages::run,
    },
    Section {
        name: "blocks",
        title: "fileblock over FdPageIo: blocks with stable ids in a file, freed, compacted, \
                reopened",
        run: blocks::run,
    },
    Section {
        name: "objblocks",
        title: "fileblock over objsync's ObjectPageIo: the same, with every page an object",
        run: objblocks::run,
    },
    Section {
        name: "segments",
        title: "segcache + objsync: a SegmentStore (disk cache + uploads/downloads)",
        run: segments::run,
    },
];

/// What a section gets to work with.
pub struct Context<'a> {
    /// An empty folder of the section's own.
    pub dir: &'a Path,
    /// The object store, for the sections that use one.
    pub remote: &'a Remote,
    /// The section's name, for its object prefix.
    pub name: &'static str,
    /// Do less work where a section can (tests against a slow server).
    pub small: bool,
}

impl Context<'_> {
    /// The prefix under which this section keeps its objects.
    pub fn prefix(&self) -> String {
        self.remote.prefix(self.name)
    }
}

/// What a section did, for the summary table. `None` means the column does not apply.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    /// Operations done through the layer's API: page gets, block allocations, writes, frees
    /// and reads, commits, segment puts and gets.
    pub ops: u64,
    /// Bytes written and read through the layer's API.
    pub bytes: u64,
    /// Lookups served by a cache, as a fraction of all lookups, where there is a cache whose
    /// counters are visible.
    pub hit_ratio: Option<f64>,
    /// Hedged GETs raised and how many of them won, for sections that download objects.
    pub hedges: Option<Hedges>,
    /// File (or device) length before and after compaction, for `fileblock` sections.
    pub compaction: Option<Compaction>,
}

/// Hedged GETs of a section.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Hedges {
    /// Hedge requests raised.
    pub raised: u64,
    /// Hedge requests that answered first.
    pub won: u64,
}

/// The length of a `fileblock` file before and after compaction, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compaction {
    /// Before.
    pub before: u64,
    /// After.
    pub after: u64,
}

/// Options of `demo`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Run the object sections against the S3 server named by the environment.
    pub s3: bool,
}

impl Options {
    /// Parses `demo`'s arguments: `--s3`.
    pub fn parse(args: &[&str]) -> anyhow::Result<Self> {
        let mut opts = Self::default();
        for &arg in args {
            match arg {
                "--s3" => opts.s3 = true,
                other => anyhow::bail!(
                    "unknown demo argument `{other}` (usage: cargo xtask demo [--s3]; --s3 runs \
                     the object sections against the S3 server in PAGESTORE_S3_ENDPOINT and \
                     the AWS_* variables)"
                ),
            }
        }
        Ok(opts)
    }
}

/// Runs `demo`.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let remote = if opts.s3 {
        Remote::s3_from_env()?
    } else {
        Remote::in_memory()
    };
    run_sections(SECTIONS, &remote, false).map(drop)
}

/// Runs `sections` on `remote` in a fresh scratch directory (`small`: see [`Context::small`]),
/// prints the summary, deletes what the run put in an S3 bucket (also when a section failed)
/// and returns the figures.
fn run_sections(
    sections: &[Section],
    remote: &Remote,
    small: bool,
) -> anyhow::Result<Vec<(&'static str, Duration, Figures)>> {
    let scratch = tempfile::Builder::new()
        .prefix("pagestore-demo-")
        .tempdir()
        .context("creating a scratch directory")?;
    println!(
        "pagestore demo (scratch directory {}; object store: {})",
        scratch.path().display(),
        remote.describe()
    );
    let start = Instant::now();
    let result = run_in(sections, remote, scratch.path(), small);
    let cleanup = remote.cleanup();
    let rows = match result {
        Ok(rows) => rows,
        Err(err) => {
            if let Err(cleanup) = cleanup {
                eprintln!("demo: deleting the run's objects failed too: {cleanup:#}");
            }
            return Err(err);
        }
    };
    let deleted = cleanup.context("deleting the demo's objects from the S3 bucket")?;
    print!("\n{}", summary_table(&rows));
    let removed = if remote.is_s3() {
        format!("scratch directory removed, {deleted} object(s) deleted from the bucket")
    } else {
        "scratch directory removed".to_owned()
    };
    println!(
        "\ndemo: ok, {} section(s) in {}; {removed}",
        rows.len(),
        fmt_time(start.elapsed())
    );
    Ok(rows)
}

fn run_in(
    sections: &[Section],
    remote: &Remote,
    scratch: &Path,
    small: bool,
) -> anyhow::Result<Vec<(&'static str, Duration, Figures)>> {
    let mut rows = Vec::new();
    for (i, section) in sections.iter().enumerate() {
        println!("\n[{}/{}] {}", i + 1, sections.len(), section.title);
        let dir = scratch.join(section.name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let cx = Context {
            dir: &dir,
            remote,
            name: section.name,
            small,
        };
        let start = Instant::now();
        let figures =
            (section.run)(&cx).with_context(|| format!("demo section `{}`", section.name))?;
        rows.push((section.name, start.elapsed(), figures));
    }
    Ok(rows)
}

/// The summary: one row per section, `—` where a column does not apply.
fn summary_table(rows: &[(&str, Duration, Figures)]) -> String {
    const DASH: &str = "—";
    let header = [
        "section",
        "ops",
        "bytes",
        "time",
        "MiB/s",
        "hit ratio",
        "hedges",
        "compaction",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for (name, time, f) in rows {
        let secs = time.as_secs_f64();
        cells.push(vec![
            (*name).to_owned(),
            f.ops.to_string(),
            fmt_bytes(f.bytes),
            fmt_time(*time),
            if secs > 0.0 {
                format!("{:.1}", f.bytes as f64 / secs / f64::from(1 << 20))
            } else {
                DASH.to_owned()
            },
            f.hit_ratio
                .map_or_else(|| DASH.to_owned(), |r| format!("{:.1}%", 100.0 * r)),
            f.hedges.map_or_else(
                || DASH.to_owned(),
                |h| format!("{} ({} won)", h.raised, h.won),
            ),
            f.compaction.map_or_else(
                || DASH.to_owned(),
                |c| {
                    format!(
                        "{} -> {} (-{:.0}%)",
                        fmt_bytes(c.before),
                        fmt_bytes(c.after),
                        100.0 * (1.0 - c.after as f64 / c.before.max(1) as f64)
                    )
                },
            ),
        ]);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|col| {
            cells
                .iter()
                .map(|row| row[col].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::from("summary\n");
    for (r, row) in cells.iter().enumerate() {
        out.push(' ');
        for (col, cell) in row.iter().enumerate() {
            let w = widths[col];
            // The name is left-aligned, the figures right-aligned.
            if col == 0 {
                let _ = write!(out, " {cell:<w$}");
            } else {
                let _ = write!(out, "  {cell:>w$}");
            }
        }
        out.push('\n');
        if r == 0 {
            let rule: usize = widths.iter().sum::<usize>() + 2 * widths.len() - 1;
            let _ = writeln!(out, "  {}", "-".repeat(rule));
        }
    }
    out
}

/// `12.3 ms`, `1.45 s`.
fn fmt_time(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// Fills `buf` with the stream of the generator seeded with `seed`: regenerated from the seed
/// to check what is read back.
fn fill(buf: &mut [u8], seed: u64) {
    Rng::new(seed).fill(buf);
}

/// Whether `buf` holds what [`fill`] wrote with `seed`.
fn verify(buf: &[u8], seed: u64) -> bool {
    let mut rng = Rng::new(seed);
    buf.chunks(8).all(|chunk| {
        let word = rng.next_u64().to_le_bytes();
        chunk == &word[..chunk.len()]
    })
}

/// Keys `0..n` drawn with probability proportional to `1 / (rank + 1)^s`, hottest first.
struct Zipf {
    /// Cumulative probabilities, ending at 1.
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut cdf: Vec<f64> = (1..=n)
            .scan(0.0, |sum, rank| {
                *sum += 1.0 / (rank as f64).powf(s);
                Some(*sum)
            })
            .collect();
        let total = cdf.last().copied().unwrap_or(1.0);
        for c in &mut cdf {
            *c /= total;
        }
        Self { cdf }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.next_f64();
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use object_store::path::Path as ObjectPath;
    use objsync::testing::S3Server;

    use super::*;

    #[test]
    fn options_take_s3_and_refuse_the_rest() {
        assert_eq!(Options::parse(&[]).unwrap(), Options { s3: false });
        assert_eq!(Options::parse(&["--s3"]).unwrap(), Options { s3: true });
        let err = Options::parse(&["--s3", "--fast"]).unwrap_err().to_string();
        assert!(err.contains("unknown demo argument `--fast`"), "{err}");
        assert!(err.contains("--s3"), "the error shows the usage: {err}");
    }

    #[test]
    fn summary_has_a_row_per_section_and_dashes_where_nothing_applies() {
        let rows = [
            (
                "pages",
                Duration::from_secs(2),
                Figures {
                    ops: 10,
                    bytes: 4 << 20,
                    hit_ratio: Some(0.5),
                    ..Figures::default()
                },
            ),
            (
                "objblocks",
                Duration::from_millis(500),
                Figures {
                    ops: 7,
                    bytes: 1536,
                    hedges: Some(Hedges { raised: 3, won: 1 }),
                    compaction: Some(Compaction {
                        before: 4 << 20,
                        after: 1 << 20,
                    }),
                    ..Figures::default()
                },
            ),
        ];
        let table = summary_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert_eq!(lines[0], "summary");
        assert!(lines[1].trim_start().starts_with("section"), "{table}");
        assert!(lines[2].trim().chars().all(|c| c == '-'), "{table}");
        let pages: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(
            pages,
            [
                "pages", "10", "4.0", "MiB", "2.00", "s", "2.0", "50.0%", "—", "—"
            ],
            "{table}"
        );
        let objblocks: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(objblocks[..3], ["objblocks", "7", "1.5"], "{table}");
        assert!(
            lines[4].contains("  —  3 (1 won)  4.0 MiB -> 1.0 MiB (-75%)"),
            "{table}"
        );
        // The columns line up: every row is as wide as the header.
        let width = lines[1].chars().count();
        assert!(
            lines[3..].iter().all(|l| l.chars().count() == width),
            "{table}"
        );
    }

    #[test]
    fn fill_and_verify_agree_and_catch_a_flipped_bit() {
        let mut buf = vec![0u8; 1001];
        fill(&mut buf, 42);
        assert!(verify(&buf, 42));
        assert!(!verify(&buf, 43));
        buf[1000] ^= 1;
        assert!(!verify(&buf, 42));
    }

    /// `--s3` end to end, against objsync's in-process S3 server (s3s-fs): the object sections
    /// run on the bucket and leave nothing in it.
    #[test]
    fn object_sections_run_on_s3_and_clean_up() {
        let server = S3Server::start().unwrap();
        let remote = Remote::s3(server.config(), server.endpoint().to_owned());
        let sections: Vec<Section> = SECTIONS
            .iter()
            .filter(|s| matches!(s.name, "objblocks" | "segments"))
            .copied()
            .collect();
        // s3s-fs in process answers a GET in about 40 ms on this machine (small responses
        // wait on delayed ACKs), so the test runs the small plan.
        let rows = run_sections(&sections, &remote, true).unwrap();
        let names: Vec<&str> = rows.iter().map(|(name, _, _)| *name).collect();
        assert_eq!(names, ["objblocks", "segments"]);
        for (name, _, figures) in &rows {
            assert!(figures.ops > 0 && figures.bytes > 0, "{name}: {figures:?}");
            assert!(figures.hedges.is_some(), "{name}: {figures:?}");
        }
        assert!(rows[0].2.compaction.is_some() && rows[1].2.hit_ratio.is_some());

        let store = server.config().build().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let left = runtime
            .block_on(remote::list_tree(
                store.as_ref(),
                ObjectPath::from("pagestore-demo"),
            ))
            .unwrap();
        assert!(left.is_empty(), "the run's objects are deleted: {left:?}");
    }

    #[test]
    fn zipf_prefers_low_ranks() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(7);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        // P(rank 0) = 1 / H(1000) ≈ 0.134; the top 10% of keys draw ≈ 0.69 of the samples.
        assert!((12_000..15_000).contains(&counts[0]), "{}", counts[0]);
        let top: u32 = counts[..100].iter().sum();
        assert!((66_000..72_000).contains(&top), "{top}");
        assert!(counts[0] > counts[1] && counts[1] > counts[10]);
    }
}
