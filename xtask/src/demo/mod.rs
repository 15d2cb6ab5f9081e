//! `cargo xtask demo`: the main job of each layer, end to end at small scale, on embedded
//! defaults (temp files, no server).
//!
//! The demo is a list of [`Section`]s, one per stack of layers, each working in its own folder
//! of one scratch directory and printing what it did. Each section checks its results (every
//! byte read back is compared) and fails the demo when something is off. A new layer adds a
//! module with a `run(dir) -> anyhow::Result<()>` and a line in [`SECTIONS`].

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;

mod blocks;
mod pages;
mod segments;

/// One part of the demo.
struct Section {
    /// A folder name for the section's files, also shown in the heading.
    name: &'static str,
    /// What the section shows, for the heading.
    title: &'static str,
    /// Does the work in the given (empty) folder and prints what it did.
    run: fn(&Path) -> anyhow::Result<()>,
}

const SECTIONS: &[Section] = &[
    Section {
        name: "pages",
        title: "pageio + pagecache: a file of pages behind a write-back LRU cache",
        run: pages::run,
    },
    Section {
        name: "blocks",
        title: "fileblock: blocks with stable ids in a file, freed, compacted, reopened",
        run: blocks::run,
    },
    Section {
        name: "segments",
        title: "segcache + objsync: a SegmentStore (disk cache + uploads/downloads) on InMemory",
        run: segments::run,
    },
];

/// Runs `demo`.
pub fn run() -> anyhow::Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("pagestore-demo-")
        .tempdir()
        .context("creating a scratch directory")?;
    println!(
        "pagestore demo (scratch directory {})",
        scratch.path().display()
    );
    let start = Instant::now();
    for (i, section) in SECTIONS.iter().enumerate() {
        println!("\n[{}/{}] {}", i + 1, SECTIONS.len(), section.title);
        let dir = scratch.path().join(section.name);
        std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        (section.run)(&dir).with_context(|| format!("demo section `{}`", section.name))?;
    }
    println!(
        "\ndemo: ok, {} section(s) in {}; scratch directory removed",
        SECTIONS.len(),
        fmt_time(start.elapsed())
    );
    Ok(())
}

/// `12.3 ms`, `1.45 s`.
fn fmt_time(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

/// A small deterministic generator (xorshift64*), so page contents and key traces are the same
/// on every run and can be regenerated to check what was read.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Mix the seed so that nearby seeds give unrelated streams; never 0 (a fixed point).
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
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
    use super::*;

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

    #[test]
    fn rng_is_deterministic_and_uniform() {
        let (mut a, mut b) = (Rng::new(1), Rng::new(1));
        assert_eq!(a.next_u64(), b.next_u64());
        let mean = (0..10_000).map(|_| a.next_f64()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
    }
}
