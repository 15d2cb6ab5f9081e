//! The comparisons of BENCH.md, one [`RowSpec`] per row of `target/bench/results.json`.
//!
//! This table is the one place that says which measurements make a row. To add a row, add a
//! spec here (its crate is the part of `bench` before the `/`) and make that crate's bench
//! produce the inputs the spec names:
//! - [`Source::Criterion`]: two criterion benchmarks, `$CRITERION_HOME/<group>/<function>/new/
//!   estimates.json`, i.e. `c.benchmark_group(group).bench_function(function, ..)`;
//! - [`Source::Metrics`]: a file `$PAGESTORE_BENCH_METRICS/<file>.json` written by the bench
//!   itself, `{"ours": f64, "baseline_value": f64, "extra": {..}}` (`extra` optional), for
//!   figures that are not timings (hit ratios, space utilisation).
//!
//! The `bench_rows_are_consistent` test checks the table (names, goals, units).

/// Which direction of the metric is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Smaller values are better (times).
    Lower,
    /// Larger values are better (throughput, hit ratio).
    Higher,
}

impl Better {
    /// `"lower"` or `"higher"`, as in results.json.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lower => "lower",
            Self::Higher => "higher",
        }
    }

    /// The inverse of [`as_str`](Self::as_str).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "lower" => Some(Self::Lower),
            "higher" => Some(Self::Higher),
            _ => None,
        }
    }
}

/// How a criterion time (mean nanoseconds per iteration) becomes the row's metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Unit {
    /// The time itself: one operation per iteration.
    NsPerOp,
    /// Operations per second, `1e9 * ops_per_iter / ns`.
    OpsPerSec {
        /// Operations one iteration performs (across all threads).
        ops_per_iter: f64,
    },
    /// Bytes per second, `1e9 * bytes_per_iter / ns`.
    BytesPerSec {
        /// Bytes one iteration moves.
        bytes_per_iter: f64,
    },
}

impl Unit {
    /// Converts nanoseconds per iteration to this unit.
    pub fn convert(self, ns_per_iter: f64) -> f64 {
        match self {
            Self::NsPerOp => ns_per_iter,
            Self::OpsPerSec { ops_per_iter } => 1e9 * ops_per_iter / ns_per_iter,
            Self::BytesPerSec { bytes_per_iter } => 1e9 * bytes_per_iter / ns_per_iter,
        }
    }
}

/// A criterion benchmark id: `(group, function)`.
pub type BenchId = (&'static str, &'static str);

/// Where a row's two figures come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    /// Two criterion benchmarks measured in the same run.
    Criterion {
        /// Ours.
        ours: BenchId,
        /// The baseline.
        baseline: BenchId,
        /// How their times become the metric.
        unit: Unit,
    },
    /// A metrics file written by the bench: `$PAGESTORE_BENCH_METRICS/<file>.json`.
    Metrics {
        /// The file name without `.json`.
        file: &'static str,
    },
}

/// One comparison: a row of results.json.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowSpec {
    /// `crate/name`; the crate part decides when the row is composed.
    pub bench: &'static str,
    /// The metric's name, e.g. `ns_per_op`.
    pub metric: &'static str,
    /// Which direction wins.
    pub better: Better,
    /// What the baseline is, in words.
    pub baseline: &'static str,
    /// The bound the ratio ours / baseline must meet: `<= x`, `>= x` or `= x` (±0.005).
    pub goal: &'static str,
    /// Where the figures come from.
    pub source: Source,
}

impl RowSpec {
    /// The crate whose benches produce this row.
    pub fn krate(&self) -> &'static str {
        self.bench.split_once('/').map_or(self.bench, |(k, _)| k)
    }
}

const NS_PER_OP: Unit = Unit::NsPerOp;

/// Every row, in the order of BENCH.md.
pub const ROWS: &[RowSpec] = &[
    RowSpec {
        bench: "pagecache/hit",
        metric: "ns_per_op",
        better: Better::Lower,
        baseline: "lru::LruCache behind parking_lot::Mutex, Arc clone",
        goal: "<= 1.0",
        source: Source::Criterion {
            ours: ("pagecache_hit", "ours"),
            baseline: ("pagecache_hit", "lru_mutex"),
            unit: NS_PER_OP,
        },
    },
    RowSpec {
        bench: "pagecache/hit_vs_pread",
        metric: "ns_per_op",
        better: Better::Lower,
        baseline: "pread of the same 4 KiB page from the OS page cache",
        goal: "<= 0.1",
        source: Source::Criterion {
            ours: ("pagecache_hit", "ours"),
            baseline: ("pagecache_hit", "pread_4k"),
            unit: NS_PER_OP,
        },
    },
    RowSpec {
        bench: "pagecache/hit_ratio",
        metric: "hit_ratio",
        better: Better::Higher,
        baseline: "lru::LruCache on the same trace",
        goal: "= 1.0",
        source: Source::Metrics {
            file: "pagecache_hit_ratio",
        },
    },
    RowSpec {
        bench: "pagecache/hit_2threads",
        metric: "hits_per_sec",
        better: Better::Higher,
        baseline: "lru::LruCache behind parking_lot::Mutex, 2 threads",
        goal: ">= 1.0",
        source: Source::Criterion {
            ours: ("pagecache_hit_2threads", "ours"),
            baseline: ("pagecache_hit_2threads", "lru_mutex"),
            // One iteration is one hit in total across both threads.
            unit: Unit::OpsPerSec { ops_per_iter: 1.0 },
        },
    },
    RowSpec {
        bench: "pagecache/hit_scaling",
        metric: "ns_per_op",
        better: Better::Lower,
        baseline: "ours with 1 Ki cached pages",
        goal: "<= 1.5",
        source: Source::Criterion {
            ours: ("pagecache_hit_scaling", "ours_256k"),
            baseline: ("pagecache_hit_scaling", "ours_1k"),
            unit: NS_PER_OP,
        },
    },
    RowSpec {
        bench: "pagecache/miss_overhead",
        metric: "ns_per_op",
        better: Better::Lower,
        baseline: "raw pread+pwrite of the same pages",
        goal: "<= 1.1",
        source: Source::Criterion {
            ours: ("pagecache_miss", "ours"),
            baseline: ("pagecache_miss", "raw_pread_pwrite"),
            unit: NS_PER_OP,
        },
    },
    RowSpec {
        bench: "blockcache/single_page",
        metric: "ns_per_op",
        better: Better::Lower,
        baseline: "pagecache/hit (same run)",
        goal: "<= 1.2",
        source: Source::Criterion {
            ours: ("blockcache_single_page", "ours"),
            baseline: ("blockcache_single_page", "pagecache_hit"),
            unit: NS_PER_OP,
        },
    },
    RowSpec {
        bench: "blockcache/multi_page",
        metric: "bytes_per_sec",
        better: Better::Higher,
        baseline: "memcpy of 256 KiB",
        goal: ">= 0.5",
        source: Source::Criterion {
            ours: ("blockcache_multi_page", "ours"),
            baseline: ("blockcache_multi_page", "memcpy"),
            // One iteration gets and reads one 256 KiB block.
            unit: Unit::BytesPerSec {
                bytes_per_iter: 262_144.0,
            },
        },
    },
    RowSpec {
        bench: "fileblock/alloc_free",
        metric: "ops_per_sec",
        better: Better::Higher,
        baseline: "offset-allocator crate, same sequence",
        goal: ">= 0.5",
        source: Source::Criterion {
            ours: ("fileblock_alloc_free", "ours"),
            baseline: ("fileblock_alloc_free", "offset_allocator"),
            // One iteration replays the timed part of the sequence: `TIMED_OPS` (128 Ki)
            // allocs and frees, in fileblock/benches/alloc.rs.
            unit: Unit::OpsPerSec {
                ops_per_iter: 131_072.0,
            },
        },
    },
    RowSpec {
        bench: "fileblock/utilization",
        metric: "live_over_file_bytes",
        better: Better::Higher,
        baseline: "offset-allocator on the same sequence (live / highest end offset used)",
        goal: ">= 1.1",
        source: Source::Metrics {
            file: "fileblock_utilization",
        },
    },
    RowSpec {
        bench: "fileblock/open_scaling",
        metric: "ns_per_extent",
        better: Better::Lower,
        baseline: "ours at 100k extents",
        goal: "<= 1.3",
        source: Source::Metrics {
            // Medians of ns per extent over interleaved rounds of opens timed by the bench after
            // the criterion group `fileblock_open_scaling/{open_1m,open_100k}` (ns per open).
            file: "fileblock_open_scaling",
        },
    },
    RowSpec {
        bench: "fileblock/flush_1m",
        metric: "ns_per_op",
        better: Better::Lower,
        baseline: "sequential write+fsync of the same bytes",
        goal: "<= 1.5",
        source: Source::Criterion {
            ours: ("fileblock_flush_1m", "ours"),
            baseline: ("fileblock_flush_1m", "write_fsync"),
            unit: NS_PER_OP,
        },
    },
    RowSpec {
        bench: "segcache/hot_get",
        metric: "ns_per_op",
        better: Better::Lower,
        baseline: "pagecache/hit (same run, same Zipf trace over as many 4 KiB pages)",
        goal: "<= 2.0",
        source: Source::Criterion {
            ours: ("segcache_hot_get", "ours"),
            baseline: ("segcache_hot_get", "pagecache_hit"),
            unit: NS_PER_OP,
        },
    },
    RowSpec {
        bench: "segcache/cold_get",
        metric: "ns_per_op",
        better: Better::Lower,
        baseline: "object_store get + write file + sync_data + dir fsync (InMemory remote, 1 MiB)",
        goal: "<= 1.1",
        source: Source::Criterion {
            // SegmentStore::get of a segment evicted locally: download, reserve, write,
            // persist, map; segcache/benches/cold_get.rs.
            ours: ("segcache_cold_get", "ours"),
            baseline: ("segcache_cold_get", "object_store_get_write"),
            unit: NS_PER_OP,
        },
    },
    RowSpec {
        bench: "segcache/persist",
        metric: "ns_per_op",
        better: Better::Lower,
        baseline: "tempfile::NamedTempFile + sync_data + persist_noclobber + dir fsync, 64 KiB",
        goal: "<= 1.0",
        source: Source::Criterion {
            // reserve + write_at + persist (O_TMPFILE + linkat, dir fsync, map), in a
            // current-thread runtime; segcache/benches/persist.rs.
            ours: ("segcache_persist", "ours"),
            baseline: ("segcache_persist", "named_tempfile"),
            unit: NS_PER_OP,
        },
    },
    RowSpec {
        bench: "segcache/scan_100k",
        metric: "ns_per_op",
        better: Better::Lower,
        baseline: "std::fs::read_dir + metadata of the same 100 000 files",
        goal: "<= 2.0",
        source: Source::Criterion {
            // One iteration is one open (ours) or one listing (baseline) of 100 000 files.
            ours: ("segcache_scan_100k", "ours"),
            baseline: ("segcache_scan_100k", "read_dir_metadata"),
            unit: NS_PER_OP,
        },
    },
    RowSpec {
        bench: "objsync/upload",
        metric: "bytes_per_sec",
        better: Better::Higher,
        baseline: "plain object_store puts, same objects, 8 in flight",
        goal: ">= 1.0",
        source: Source::Metrics {
            // Medians over alternating rounds of 256 (64 with --quick) x 4 MiB objects to the
            // test S3 server, timed by objsync/benches/upload.rs.
            file: "objsync_upload",
        },
    },
    RowSpec {
        bench: "objsync/hedged_p99",
        metric: "p99_ms",
        better: Better::Lower,
        baseline: "same GETs with hedging off (FaultyStore, 5% of requests +500 ms)",
        goal: "<= 0.2",
        source: Source::Metrics {
            // p99 of 2000 GETs on tokio's paused clock; extra carries the hedge counts and the
            // share of extra requests (<= 10%). objsync/benches/hedged_get.rs.
            file: "objsync_hedged_p99",
        },
    },
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::bench::results::Goal;

    /// The direction that wins for a unit.
    fn better(unit: Unit) -> Better {
        match unit {
            Unit::NsPerOp => Better::Lower,
            Unit::OpsPerSec { .. } | Unit::BytesPerSec { .. } => Better::Higher,
        }
    }

    #[test]
    fn bench_rows_are_consistent() {
        let mut names = HashSet::new();
        for row in ROWS {
            assert!(names.insert(row.bench), "{}: listed twice", row.bench);
            let (krate, name) = row.bench.split_once('/').expect("bench is crate/name");
            assert!(!krate.is_empty() && !name.is_empty(), "{}", row.bench);
            assert!(
                Goal::parse(row.goal).is_some(),
                "{}: goal {:?}",
                row.bench,
                row.goal
            );
            assert!(
                !row.metric.is_empty() && !row.baseline.is_empty(),
                "{}",
                row.bench
            );
            match row.source {
                Source::Criterion {
                    ours,
                    baseline,
                    unit,
                } => {
                    assert_eq!(row.better, better(unit), "{}: unit vs better", row.bench);
                    assert_ne!(ours, baseline, "{}", row.bench);
                    if unit == Unit::NsPerOp {
                        assert_eq!(row.metric, "ns_per_op", "{}", row.bench);
                    }
                }
                Source::Metrics { file } => assert!(!file.is_empty(), "{}", row.bench),
            }
        }
    }

    #[test]
    fn units_convert_nanoseconds() {
        assert!((NS_PER_OP.convert(40.0) - 40.0).abs() < 1e-9);
        let two_ops = Unit::OpsPerSec { ops_per_iter: 2.0 };
        assert!((two_ops.convert(100.0) - 2e7).abs() < 1e-3);
        let page = Unit::BytesPerSec {
            bytes_per_iter: 4096.0,
        };
        assert!((page.convert(1000.0) - 4.096e9).abs() < 1.0);
    }
}
