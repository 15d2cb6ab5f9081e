//! `BENCHMARKS.md`: the report a full `cargo xtask bench` writes at the workspace root from the
//! rows of `target/bench/results.json`, with the machine they were measured on.
//!
//! Every row of [`ROWS`] gets a line, measured or not, so a missing comparison shows as a gap
//! rather than disappearing; rows carried over from a `--quick` run are marked as such.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;

use super::results::{Row, TABLE_HEADER, met_cell, table_line};
use super::rows::ROWS;

/// What the figures were measured on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// CPUs this process may run on.
    pub cpus: usize,
    /// Total memory, as `/proc/meminfo` gives it.
    pub memory: String,
    /// Kernel release.
    pub kernel: String,
    /// `rustc -V`.
    pub rustc: String,
    /// The commit measured, with a note when the tree had uncommitted changes.
    pub commit: String,
    /// When the report was written, UTC.
    pub date: String,
}

impl Machine {
    /// Reads what it can from `/proc`, `rustc` and `git`; what cannot be read says "unknown".
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
        let commit =
            match command_line(Command::new("git").args(["rev-parse", "--short=12", "HEAD"])) {
                Some(hash) => {
                    // The report itself does not count: every full run rewrites it.
                    let dirty = command_line(Command::new("git").args([
                        "status",
                        "--porcelain",
                        "--untracked-files=no",
                        "--",
                        ".",
                        ":!BENCHMARKS.md",
                    ]))
                    .is_some();
                    if dirty {
                        format!("{hash} (with uncommitted changes)")
                    } else {
                        hash
                    }
                }
                None => "unknown".into(),
            };
        Self {
            cpu: proc_field(&cpuinfo, "model name").unwrap_or_else(|| "unknown".into()),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            memory: proc_field(&meminfo, "MemTotal").map_or_else(|| "unknown".into(), fmt_kib),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned()),
            rustc: command_line(Command::new(rustc).arg("-V")).unwrap_or_else(|| "unknown".into()),
            commit,
            date: utc_date(SystemTime::now()),
        }
    }
}

/// The first line a command prints, trimmed; `None` when it fails or prints nothing.
fn command_line(cmd: &mut Command) -> Option<String> {
    let output = cmd
        .current_dir(crate::project_root())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let line = text.lines().next()?.trim();
    (output.status.success() && !line.is_empty()).then(|| line.to_owned())
}

/// The value of `key: value` in a `/proc` text file.
fn proc_field(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_owned())
    })
}

/// `"24570632 kB"` → `"23.4 GiB"`; anything else is returned as it is.
fn fmt_kib(value: String) -> String {
    match value
        .strip_suffix(" kB")
        .and_then(|n| n.trim().parse::<u64>().ok())
    {
        Some(kib) => format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)),
        None => value,
    }
}

/// `2026-12-04 17:05 UTC`.
fn utc_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (days are never negative here).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days fall at the end of a year, then split the
    // count into 400-year eras of 146 097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// The report's text.
pub fn render(rows: &[Row], machine: &Machine) -> String {
    let mut out = String::from(
        "# Benchmarks\n\n\
         Written by `cargo xtask bench` (a full run, not `--quick`) from \
         `target/bench/results.json`; do not edit it by hand, run the command again. Every figure \
         is compared with a baseline measured in the same run on the same data: `ratio` is \
         ours / baseline, `better` says which direction wins, and `goal` is the bound the ratio \
         must meet. Rows whose baseline is \"ours\" measure how a cost grows with the work. The \
         machine is small and shared, so absolute figures drift between runs; the ratios are \
         what to compare.\n\n## Machine\n\n",
    );
    let _ = writeln!(
        out,
        "- CPU: {} ({} CPUs available)",
        machine.cpu, machine.cpus
    );
    let _ = writeln!(out, "- Memory: {}", machine.memory);
    let _ = writeln!(out, "- Kernel: Linux {}", machine.kernel);
    let _ = writeln!(out, "- Compiler: {}", machine.rustc);
    let _ = writeln!(out, "- Commit: {}", machine.commit);
    let _ = writeln!(out, "- Written: {}", machine.date);

    let measured: Vec<(&'static str, Option<&Row>)> = ROWS
        .iter()
        .map(|spec| (spec.bench, rows.iter().find(|r| r.bench == spec.bench)))
        .collect();
    let met = measured
        .iter()
        .filter(|(_, row)| row.and_then(Row::met) == Some(true))
        .count();
    let missing = measured.iter().filter(|(_, row)| row.is_none()).count();
    let _ = write!(out, "\n## Results\n\n{met} of {} goals met", ROWS.len());
    if missing > 0 {
        let _ = write!(out, "; {missing} not measured");
    }
    out.push_str(".\n\n");
    out.push_str(TABLE_HEADER);
    for (bench, row) in &measured {
        if let Some(row) = row {
            let quick = if row.quick { " (quick run)" } else { "" };
            out.push_str(&table_line(row, &format!("{}{quick}", met_cell(row))));
        } else {
            let spec = ROWS.iter().find(|s| s.bench == *bench);
            let (metric, better, baseline, goal) = spec.map_or(("", "", "", ""), |s| {
                (s.metric, s.better.as_str(), s.baseline, s.goal)
            });
            let _ = writeln!(
                out,
                "| `{bench}` | {metric} | {better} | — | {baseline} | — | — | {goal} | not measured |"
            );
        }
    }
    // Rows results.json holds that the table no longer lists: shown, not dropped.
    for row in rows
        .iter()
        .filter(|r| !ROWS.iter().any(|s| s.bench == r.bench))
    {
        out.push_str(&table_line(row, "retired row"));
    }

    let extras: Vec<&Row> = rows.iter().filter(|r| r.extra.is_some()).collect();
    if !extras.is_empty() {
        out.push_str("\n## Extra figures\n\n");
        for row in extras {
            let extra = row
                .extra
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default();
            let _ = writeln!(out, "- `{}`: `{extra}`", row.bench);
        }
    }
    out
}

/// Writes the report to `path` (write then rename, so a reader never sees half of it).
pub fn write(path: &Path, rows: &[Row], machine: &Machine) -> anyhow::Result<()> {
    let tmp = path.with_extension("md.tmp");
    std::fs::write(&tmp, render(rows, machine))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::rows::Better;

    fn machine() -> Machine {
        Machine {
            cpu: "Test CPU".into(),
            cpus: 2,
            memory: "24.0 GiB".into(),
            kernel: "6.1.0".into(),
            rustc: "rustc 1.95.0".into(),
            commit: "0123456789ab".into(),
            date: "2026-12-04 17:05 UTC".into(),
        }
    }

    fn row(bench: &str, ratio: f64, quick: bool) -> Row {
        Row {
            bench: bench.into(),
            metric: "ns_per_op".into(),
            better: Better::Lower,
            ours: 10.0 * ratio,
            baseline: "a baseline".into(),
            baseline_value: 10.0,
            ratio,
            goal: "<= 1.0".into(),
            extra: None,
            quick,
        }
    }

    #[test]
    fn every_row_of_the_table_appears_measured_or_not() {
        let mut hedged = row("objsync/hedged_p99", 0.03, false);
        hedged.goal = "<= 0.2".into();
        hedged.extra = Some(serde_json::json!({"hedges": 12}));
        let rows = vec![
            row("pagecache/hit", 0.8, false),
            row("pagecache/hit_scaling", 2.0, true),
            hedged,
            row("pagecache/retired", 1.0, false),
        ];
        let text = render(&rows, &machine());
        assert!(
            text.contains("- CPU: Test CPU (2 CPUs available)"),
            "{text}"
        );
        assert!(text.contains("- Commit: 0123456789ab"));
        assert!(text.contains(&format!(
            "2 of {} goals met; {} not measured.",
            ROWS.len(),
            ROWS.len() - 3
        )));
        for spec in ROWS {
            let line = text
                .lines()
                .find(|l| l.starts_with(&format!("| `{}` |", spec.bench)))
                .unwrap_or_else(|| panic!("{} missing:\n{text}", spec.bench));
            match spec.bench {
                "pagecache/hit" => assert!(line.ends_with("| 0.800 | <= 1.0 | yes |"), "{line}"),
                "pagecache/hit_scaling" => {
                    assert!(line.ends_with("| **no** (quick run) |"), "{line}");
                }
                "objsync/hedged_p99" => {
                    assert!(line.ends_with("| 0.030 | <= 0.2 | yes |"), "{line}");
                }
                _ => assert!(line.ends_with("| not measured |"), "{line}"),
            }
        }
        assert!(text.contains("| `pagecache/retired` |") && text.contains("retired row |"));
        assert!(
            text.contains("- `objsync/hedged_p99`: `{\"hedges\":12}`"),
            "{text}"
        );
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_791), (2026, 12, 4));
        let t = UNIX_EPOCH + std::time::Duration::from_mins(20_791 * 24 * 60 + 17 * 60 + 5);
        assert_eq!(utc_date(t), "2026-12-04 17:05 UTC");
    }

    #[test]
    fn proc_fields_and_memory_read() {
        let meminfo = "MemTotal:       24570632 kB\nMemFree:  1 kB\n";
        let total = proc_field(meminfo, "MemTotal").unwrap();
        assert_eq!(fmt_kib(total), "23.4 GiB");
        assert_eq!(proc_field(meminfo, "Swap"), None);
        assert_eq!(fmt_kib("odd".into()), "odd");
    }

    #[test]
    fn the_report_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("BENCHMARKS.md");
        write(&path, &[row("pagecache/hit", 0.8, false)], &machine()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# Benchmarks\n"));
        assert!(!dir.path().join("BENCHMARKS.md.tmp").exists());
    }
}
