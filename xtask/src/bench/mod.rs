//! `cargo xtask bench [--quick] [CRATE...]`: runs the benches of BENCH.md and writes
//! `target/bench/results.json`.
//!
//! Each crate's bench targets run with `CRITERION_HOME=<target>/criterion` and
//! `PAGESTORE_BENCH_METRICS=<target>/bench/metrics`; then every row of [`rows::ROWS`] whose
//! crate just ran is composed from what the run wrote. A row whose inputs are missing or older
//! than the run is an error: a bench that does no work is a defect. The rows of crates not run
//! this time are kept from the previous results.json. A full run (not `--quick`) also writes
//! `BENCHMARKS.md` at the workspace root ([`report`]).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::steps::{self, Env, Status, Step};

pub mod report;
pub mod results;
pub mod rows;

use results::Row;
use rows::{BenchId, ROWS, RowSpec, Source};

/// Criterion arguments for `--quick`: its quick mode (stops once the estimate is stable) with a
/// short warm-up and a cap on measuring, so a crate's benches finish in well under 3 minutes.
const QUICK_ARGS: &[&str] = &["--quick", "--warm-up-time", "1", "--measurement-time", "2"];

/// Filesystem timestamps can be coarse: an input this much older than the run still counts as
/// written by it.
const MTIME_SLACK: Duration = Duration::from_secs(2);

/// Flags of `bench`.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Criterion's quick mode with short warm-up and measurement.
    pub quick: bool,
    /// The crates to run; empty means every member with benches.
    pub crates: Vec<String>,
}

impl Options {
    /// Parses the arguments after the command name.
    pub fn parse(args: &[&str]) -> anyhow::Result<Self> {
        let mut opts = Self::default();
        for &arg in args {
            match arg {
                "--quick" => opts.quick = true,
                flag if flag.starts_with('-') => {
                    bail!("unknown option `{flag}` (see `cargo xtask help`)")
                }
                krate => opts.crates.push(krate.to_owned()),
            }
        }
        Ok(opts)
    }
}

/// What `cargo metadata` says about the workspace.
struct Workspace {
    /// Bench target names of each member (members without benches have none).
    benches: BTreeMap<String, Vec<String>>,
    target_dir: PathBuf,
}

impl Workspace {
    fn load() -> anyhow::Result<Self> {
        let output = crate::cargo_command()
            .args(["metadata", "--no-deps", "--format-version", "1"])
            .stderr(std::process::Stdio::inherit())
            .output()
            .context("running cargo metadata")?;
        if !output.status.success() {
            bail!("cargo metadata failed");
        }
        let meta: Value =
            serde_json::from_slice(&output.stdout).context("parsing cargo metadata")?;
        let target_dir = meta["target_directory"]
            .as_str()
            .context("cargo metadata without target_directory")?
            .into();
        let mut benches = BTreeMap::new();
        for package in meta["packages"].as_array().into_iter().flatten() {
            let name = package["name"].as_str().context("package without a name")?;
            let targets = package["targets"].as_array().into_iter().flatten();
            let names = targets
                .filter(|t| {
                    t["kind"]
                        .as_array()
                        .is_some_and(|kinds| kinds.iter().any(|k| k == "bench"))
                })
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect();
            benches.insert(name.to_owned(), names);
        }
        Ok(Self {
            benches,
            target_dir,
        })
    }

    /// The crates to run, in the order asked (default: every member with benches).
    fn select(&self, asked: &[String]) -> anyhow::Result<Vec<String>> {
        if asked.is_empty() {
            let all: Vec<String> = self
                .benches
                .iter()
                .filter(|(_, targets)| !targets.is_empty())
                .map(|(name, _)| name.clone())
                .collect();
            if all.is_empty() {
                bail!("no workspace member has benches");
            }
            return Ok(all);
        }
        let mut out: Vec<String> = Vec::new();
        for name in asked {
            match self.benches.get(name) {
                None => bail!(
                    "`{name}` is not a workspace member (members: {})",
                    self.benches.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                Some(targets) if targets.is_empty() => bail!("`{name}` has no bench targets"),
                Some(_) if out.contains(name) => {}
                Some(_) => out.push(name.clone()),
            }
        }
        Ok(out)
    }
}

/// Runs `bench`.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let ws = Workspace::load()?;
    let crates = ws.select(&opts.crates)?;
    let inputs = Inputs {
        criterion_home: ws.target_dir.join("criterion"),
        metrics_dir: ws.target_dir.join("bench").join("metrics"),
        since: SystemTime::now() - MTIME_SLACK,
        quick: opts.quick,
    };
    for dir in [&inputs.criterion_home, &inputs.metrics_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let results_path = ws.target_dir.join("bench").join("results.json");

    let mut env = Env {
        vars: vec![
            (
                "CRITERION_HOME".into(),
                inputs.criterion_home.clone().into(),
            ),
            (
                "PAGESTORE_BENCH_METRICS".into(),
                inputs.metrics_dir.clone().into(),
            ),
        ],
        ..Env::default()
    };
    let steps: Vec<Step> = crates
        .iter()
        .map(|krate| {
            let targets = ws.benches[krate]
                .iter()
                .flat_map(|t| [OsString::from("--bench"), t.into()]);
            // Naming the bench targets keeps the library's own test harness, which rejects
            // criterion's flags, out of the run.
            let step = Step::cargo(format!("bench {krate}"), ["bench", "-p", krate])
                .args(targets)
                .args(["--"]);
            if opts.quick {
                step.args(QUICK_ARGS)
            } else {
                step
            }
        })
        .collect();
    let report = steps::run(&steps, &mut env);

    let ran: Vec<String> = crates
        .iter()
        .zip(&report.outcomes)
        .filter(|(_, outcome)| matches!(outcome.status, Status::Ok))
        .map(|(krate, _)| krate.clone())
        .collect();
    let mut new_rows = Vec::new();
    let mut problems = Vec::new();
    for spec in ROWS.iter().filter(|s| ran.iter().any(|k| k == s.krate())) {
        match inputs.compose(spec) {
            Ok(row) => new_rows.push(row),
            Err(missing) => {
                problems.extend(missing.into_iter().map(|m| format!("{}: {m}", spec.bench)));
            }
        }
    }
    for krate in &ran {
        if !ROWS.iter().any(|s| s.krate() == krate) {
            eprintln!(
                "xtask: note: {krate} has benches but no rows in xtask/src/bench/rows.rs; \
                 its results are only in criterion's output"
            );
        }
    }

    let previous = results::read(&results_path).unwrap_or_else(|err| {
        eprintln!("xtask: warning: ignoring the previous results ({err:#})");
        Vec::new()
    });
    let rows = results::merge(previous, new_rows, &ran);
    results::write(&results_path, &rows)?;
    // The report is for full runs: quick figures are too rough to publish (rows a quick run
    // left in results.json are marked as such in it).
    let report_path = crate::project_root().join("BENCHMARKS.md");
    if !opts.quick {
        report::write(&report_path, &rows, &report::Machine::detect())?;
    }

    report.print_summary("bench");
    println!("\n{} ({} rows):\n", results_path.display(), rows.len());
    print!("{}", results::markdown(&rows));
    let met = rows.iter().filter(|r| r.met() == Some(true)).count();
    println!("\n{met} of {} goals met.", rows.len());
    if !opts.quick {
        println!("Report: {}", report_path.display());
    }

    let mut errors = Vec::new();
    if let Err(failed) = report.into_result() {
        errors.push(failed.to_string());
    }
    if !problems.is_empty() {
        errors.push(format!(
            "rows without their inputs (a bench that does no work is a defect):\n  {}",
            problems.join("\n  ")
        ));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        bail!("{}", errors.join("\n"))
    }
}

/// Where a run's benches leave their figures, and when the run started.
struct Inputs {
    criterion_home: PathBuf,
    metrics_dir: PathBuf,
    since: SystemTime,
    /// The run is `--quick`: its rows say so.
    quick: bool,
}

impl Inputs {
    /// The row for `spec`, or every input it lacks.
    fn compose(&self, spec: &RowSpec) -> Result<Row, Vec<String>> {
        let (ours, baseline_value, extra) = match spec.source {
            Source::Criterion {
                ours,
                baseline,
                unit,
            } => match (self.criterion_ns(ours), self.criterion_ns(baseline)) {
                (Ok(ours), Ok(baseline)) => (unit.convert(ours), unit.convert(baseline), None),
                (ours, baseline) => {
                    return Err([ours.err(), baseline.err()].into_iter().flatten().collect());
                }
            },
            Source::Metrics { file } => self.metrics(file).map_err(|m| vec![m])?,
        };
        if baseline_value == 0.0 {
            return Err(vec![
                "the baseline measured 0: no ratio can be formed".to_owned(),
            ]);
        }
        Ok(Row {
            bench: spec.bench.to_owned(),
            metric: spec.metric.to_owned(),
            better: spec.better,
            ours,
            baseline: spec.baseline.to_owned(),
            baseline_value,
            ratio: ours / baseline_value,
            goal: spec.goal.to_owned(),
            extra,
            quick: self.quick,
        })
    }

    /// Criterion's mean time per iteration of `(group, function)`, in nanoseconds.
    fn criterion_ns(&self, (group, function): BenchId) -> Result<f64, String> {
        let path = self
            .criterion_home
            .join(group)
            .join(function)
            .join("new")
            .join("estimates.json");
        let what = format!("criterion benchmark `{group}/{function}`");
        let value = self.read_fresh(&path, &what)?;
        let ns = value["mean"]["point_estimate"]
            .as_f64()
            .ok_or_else(|| format!("{}: no mean.point_estimate", path.display()))?;
        if ns.is_finite() && ns > 0.0 {
            Ok(ns)
        } else {
            Err(format!(
                "{what}: mean time {ns} ns is not a positive number"
            ))
        }
    }

    /// `(ours, baseline_value, extra)` from a metrics file.
    fn metrics(&self, file: &str) -> Result<(f64, f64, Option<Value>), String> {
        let path = self.metrics_dir.join(format!("{file}.json"));
        let value = self.read_fresh(&path, &format!("metrics file `{file}.json`"))?;
        let obj = value
            .as_object()
            .ok_or_else(|| format!("{}: not a JSON object", path.display()))?;
        let number = |key: &str| {
            obj.get(key)
                .and_then(Value::as_f64)
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("{}: no finite number `{key}`", path.display()))
        };
        Ok((
            number("ours")?,
            number("baseline_value")?,
            results::extra_from(obj),
        ))
    }

    /// Reads a JSON file that this run must have written.
    fn read_fresh(&self, path: &Path, what: &str) -> Result<Value, String> {
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|_| format!("{what} was not written ({} is missing)", path.display()))?;
        if modified < self.since {
            return Err(format!(
                "{what} was not written by this run ({} is older)",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|err| format!("reading {}: {err}", path.display()))?;
        serde_json::from_str(&text).map_err(|err| format!("parsing {}: {err}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rows::{Better, Unit};

    fn inputs(dir: &Path) -> Inputs {
        Inputs {
            criterion_home: dir.join("criterion"),
            metrics_dir: dir.join("metrics"),
            since: SystemTime::now() - MTIME_SLACK,
            quick: false,
        }
    }

    fn write_estimate(inputs: &Inputs, (group, function): BenchId, ns: f64) {
        let dir = inputs.criterion_home.join(group).join(function).join("new");
        std::fs::create_dir_all(&dir).unwrap();
        let json = format!(r#"{{"mean": {{"point_estimate": {ns}, "standard_error": 0.1}}}}"#);
        std::fs::write(dir.join("estimates.json"), json).unwrap();
    }

    const SPEC: RowSpec = RowSpec {
        bench: "demo/hit_2threads",
        metric: "hits_per_sec",
        better: Better::Higher,
        baseline: "a mutex",
        goal: ">= 1.0",
        source: Source::Criterion {
            ours: ("g", "ours"),
            baseline: ("g", "base"),
            unit: Unit::OpsPerSec { ops_per_iter: 1.0 },
        },
    };

    #[test]
    fn criterion_rows_convert_units() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = inputs(dir.path());
        write_estimate(&inputs, ("g", "ours"), 50.0);
        write_estimate(&inputs, ("g", "base"), 100.0);
        let row = inputs.compose(&SPEC).unwrap();
        assert!((row.ours - 2e7).abs() < 1e-3);
        assert!((row.baseline_value - 1e7).abs() < 1e-3);
        assert!((row.ratio - 2.0).abs() < 1e-12);
        assert_eq!(row.met(), Some(true));
    }

    #[test]
    fn missing_and_stale_inputs_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let mut inputs = inputs(dir.path());
        write_estimate(&inputs, ("g", "ours"), 50.0);
        let missing = inputs.compose(&SPEC).unwrap_err();
        assert_eq!(missing.len(), 1);
        assert!(
            missing[0].contains("`g/base` was not written"),
            "{missing:?}"
        );

        write_estimate(&inputs, ("g", "base"), 100.0);
        inputs.since = SystemTime::now() + Duration::from_mins(1);
        let stale = inputs.compose(&SPEC).unwrap_err();
        assert_eq!(stale.len(), 2, "{stale:?}");
        assert!(stale.iter().all(|m| m.contains("not written by this run")));
    }

    #[test]
    fn metrics_rows_carry_extra() {
        let dir = tempfile::tempdir().unwrap();
        let inputs = inputs(dir.path());
        let spec = RowSpec {
            bench: "demo/hit_ratio",
            metric: "hit_ratio",
            better: Better::Higher,
            baseline: "lru",
            goal: "= 1.0",
            source: Source::Metrics { file: "demo_ratio" },
        };
        std::fs::create_dir_all(&inputs.metrics_dir).unwrap();
        let path = inputs.metrics_dir.join("demo_ratio.json");
        std::fs::write(&path, r#"{"ours": 0.5, "baseline_value": 0.5}"#).unwrap();
        let row = inputs.compose(&spec).unwrap();
        assert_eq!((row.ratio, row.extra), (1.0, None));

        let extra = r#"{"ours": 0.6, "baseline_value": 0.5, "extra": {"hits": 6}}"#;
        std::fs::write(&path, extra).unwrap();
        let row = inputs.compose(&spec).unwrap();
        assert_eq!(row.extra, Some(serde_json::json!({"hits": 6})));
        assert_eq!(row.met(), Some(false));

        std::fs::write(&path, r#"{"ours": 0.6}"#).unwrap();
        assert!(inputs.compose(&spec).unwrap_err()[0].contains("baseline_value"));
    }
}
