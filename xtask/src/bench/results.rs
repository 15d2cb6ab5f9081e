//! The rows of `target/bench/results.json`: reading, merging, writing, and the Markdown table.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{Map, Value};

use super::rows::{Better, ROWS};

/// A goal on the ratio ours / baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Goal {
    /// `<= x`
    AtMost(f64),
    /// `>= x`
    AtLeast(f64),
    /// `= x`, met within ±[`Goal::EQ_TOLERANCE`].
    Equal(f64),
}

impl Goal {
    /// How close a ratio must be to meet an `=` goal.
    pub const EQ_TOLERANCE: f64 = 0.005;

    /// Parses `"<= 1.0"`, `">= 0.5"`, `"= 1.0"` (also `≤`, `≥`; spaces optional).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (make, rest): (fn(f64) -> Self, &str) =
            if let Some(r) = s.strip_prefix("<=").or_else(|| s.strip_prefix('≤')) {
                (Self::AtMost, r)
            } else if let Some(r) = s.strip_prefix(">=").or_else(|| s.strip_prefix('≥')) {
                (Self::AtLeast, r)
            } else if let Some(r) = s.strip_prefix("==").or_else(|| s.strip_prefix('=')) {
                (Self::Equal, r)
            } else {
                return None;
            };
        let bound: f64 = rest.trim().parse().ok()?;
        bound.is_finite().then(|| make(bound))
    }

    /// Whether `ratio` meets the goal.
    pub fn met(self, ratio: f64) -> bool {
        match self {
            Self::AtMost(b) => ratio <= b,
            Self::AtLeast(b) => ratio >= b,
            Self::Equal(b) => (ratio - b).abs() <= Self::EQ_TOLERANCE,
        }
    }
}

/// One comparison, as stored in results.json.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// `crate/name`.
    pub bench: String,
    /// The metric's name.
    pub metric: String,
    /// Which direction wins.
    pub better: Better,
    /// Our figure.
    pub ours: f64,
    /// What the baseline is.
    pub baseline: String,
    /// The baseline's figure.
    pub baseline_value: f64,
    /// `ours / baseline_value`.
    pub ratio: f64,
    /// The bound the ratio must meet.
    pub goal: String,
    /// Other figures the row needs.
    pub extra: Option<Value>,
    /// Measured in `--quick` mode (short warm-up and measurement), not a full run.
    pub quick: bool,
}

impl Row {
    /// The crate part of `bench`.
    pub fn krate(&self) -> &str {
        self.bench.split_once('/').map_or(&self.bench, |(k, _)| k)
    }

    /// Whether the ratio meets the goal; `None` when the goal cannot be read.
    pub fn met(&self) -> Option<bool> {
        Goal::parse(&self.goal).map(|g| g.met(self.ratio))
    }

    /// The row as a JSON object, keys in the order BENCH.md shows them.
    fn to_json(&self) -> String {
        let mut fields: Vec<(&str, Value)> = vec![
            ("bench", self.bench.clone().into()),
            ("metric", self.metric.clone().into()),
            ("better", self.better.as_str().into()),
            ("ours", self.ours.into()),
            ("baseline", self.baseline.clone().into()),
            ("baseline_value", self.baseline_value.into()),
            ("ratio", self.ratio.into()),
            ("goal", self.goal.clone().into()),
        ];
        if let Some(extra) = &self.extra {
            fields.push(("extra", extra.clone()));
        }
        if self.quick {
            fields.push(("quick", true.into()));
        }
        let body: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("{}: {v}", Value::from(k)))
            .collect();
        format!("{{{}}}", body.join(", "))
    }

    fn from_json(value: &Value) -> anyhow::Result<Self> {
        let obj = value.as_object().context("a row is not an object")?;
        let text = |key: &str| -> anyhow::Result<String> {
            obj.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("row without a string `{key}`"))
        };
        let number = |key: &str| -> anyhow::Result<f64> {
            obj.get(key)
                .and_then(Value::as_f64)
                .with_context(|| format!("row without a number `{key}`"))
        };
        let better = text("better")?;
        Ok(Self {
            bench: text("bench")?,
            metric: text("metric")?,
            better: Better::parse(&better)
                .with_context(|| format!("`better` is {better:?}, not lower or higher"))?,
            ours: number("ours")?,
            baseline: text("baseline")?,
            baseline_value: number("baseline_value")?,
            ratio: number("ratio")?,
            goal: text("goal")?,
            extra: obj.get("extra").cloned(),
            quick: obj.get("quick").and_then(Value::as_bool).unwrap_or(false),
        })
    }
}

/// Reads the rows of an existing results.json; a missing file has none.
pub fn read(path: &Path) -> anyhow::Result<Vec<Row>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let rows = value
        .as_array()
        .with_context(|| format!("{} is not a JSON array", path.display()))?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| Row::from_json(row).with_context(|| format!("{}: row {i}", path.display())))
        .collect()
}

/// `old` without the rows of the crates in `replaced`, plus `new`, in the order of the
/// row table (rows it no longer lists go last, by name).
pub fn merge(old: Vec<Row>, new: Vec<Row>, replaced: &[String]) -> Vec<Row> {
    let mut rows: Vec<Row> = old
        .into_iter()
        .filter(|row| !replaced.iter().any(|k| k == row.krate()))
        .collect();
    rows.extend(new);
    let position = |row: &Row| {
        ROWS.iter()
            .position(|spec| spec.bench == row.bench)
            .unwrap_or(usize::MAX)
    };
    rows.sort_by(|a, b| {
        position(a)
            .cmp(&position(b))
            .then_with(|| a.bench.cmp(&b.bench))
    });
    rows
}

/// Writes `rows` as a JSON array, one row per line.
pub fn write(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut text = String::from("[\n");
    for (i, row) in rows.iter().enumerate() {
        let comma = if i + 1 < rows.len() { "," } else { "" };
        let _ = writeln!(text, "  {}{comma}", row.to_json());
    }
    text.push_str("]\n");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Write then rename, so an interrupted run never leaves half a file for the next merge.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// The header of the Markdown table of rows.
pub const TABLE_HEADER: &str = "| bench | metric | better | ours | baseline | baseline value | ratio | goal | met? |\n\
     |---|---|---|---:|---|---:|---:|---|---|\n";

/// "yes", "**no**", or "?" when the goal cannot be read.
pub fn met_cell(row: &Row) -> &'static str {
    match row.met() {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "?",
    }
}

/// One line of the Markdown table, ending in `last` (the "met?" cell) and a newline.
pub fn table_line(row: &Row, last: &str) -> String {
    format!(
        "| `{}` | {} | {} | {} | {} | {} | {:.3} | {} | {last} |\n",
        row.bench,
        row.metric,
        row.better.as_str(),
        fmt_value(row.ours),
        row.baseline,
        fmt_value(row.baseline_value),
        row.ratio,
        row.goal,
    )
}

/// The rows as a Markdown table with a "met?" column.
pub fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(TABLE_HEADER);
    for row in rows {
        out.push_str(&table_line(row, met_cell(row)));
    }
    out
}

/// Four significant digits, scientific for large values.
fn fmt_value(x: f64) -> String {
    let a = x.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 1e5 {
        format!("{x:.3e}")
    } else if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

/// An `extra` value from a metrics file, or `None` when it is absent or null.
pub fn extra_from(obj: &Map<String, Value>) -> Option<Value> {
    obj.get("extra").filter(|v| !v.is_null()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bench: &str, ratio: f64) -> Row {
        Row {
            bench: bench.into(),
            metric: "ns_per_op".into(),
            better: Better::Lower,
            ours: 41.2,
            baseline: "lru+parking_lot::Mutex".into(),
            baseline_value: 52.9,
            ratio,
            goal: "<= 1.0".into(),
            extra: None,
            quick: false,
        }
    }

    #[test]
    fn goals_parse_and_evaluate() {
        assert_eq!(Goal::parse("<= 1.0"), Some(Goal::AtMost(1.0)));
        assert_eq!(Goal::parse(">=0.5"), Some(Goal::AtLeast(0.5)));
        assert_eq!(Goal::parse("= 1.0"), Some(Goal::Equal(1.0)));
        assert_eq!(Goal::parse("≤ 2"), Some(Goal::AtMost(2.0)));
        assert_eq!(Goal::parse("< 1.0"), None);
        assert_eq!(Goal::parse("<= fast"), None);
        assert!(Goal::AtMost(1.0).met(1.0) && !Goal::AtMost(1.0).met(1.01));
        assert!(Goal::AtLeast(0.5).met(0.5) && !Goal::AtLeast(0.5).met(0.49));
        assert!(Goal::Equal(1.0).met(0.996) && Goal::Equal(1.0).met(1.005));
        assert!(!Goal::Equal(1.0).met(0.99) && !Goal::Equal(1.0).met(1.006));
    }

    #[test]
    fn rows_round_trip_through_json() {
        let mut with_extra = row("pagecache/hit_ratio", 1.0);
        with_extra.extra = Some(serde_json::json!({"hits": 9000, "misses": 1000}));
        let mut quick = row("pagecache/hit", 0.78);
        quick.quick = true;
        let rows = vec![quick, with_extra];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench/results.json");
        write(&path, &rows).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("[\n  {\"bench\": \"pagecache/hit\", \"metric\": \"ns_per_op\""));
        assert_eq!(read(&path).unwrap(), rows);
        assert_eq!(read(&dir.path().join("absent.json")).unwrap(), Vec::new());
    }

    #[test]
    fn merge_replaces_only_the_crates_run() {
        let old = vec![
            row("blockcache/single_page", 1.1),
            row("pagecache/hit", 2.0),
            row("pagecache/retired", 1.0),
        ];
        let new = vec![
            row("pagecache/miss_overhead", 1.0),
            row("pagecache/hit", 0.5),
        ];
        let merged = merge(old, new, &["pagecache".to_owned()]);
        let names: Vec<&str> = merged.iter().map(|r| r.bench.as_str()).collect();
        // Table order first (pagecache/hit, pagecache/miss_overhead), then rows it does not know.
        assert_eq!(
            names,
            [
                "pagecache/hit",
                "pagecache/miss_overhead",
                "blockcache/single_page"
            ]
        );
        assert!((merged[0].ratio - 0.5).abs() < 1e-12);
    }

    #[test]
    fn markdown_marks_goals() {
        let table = markdown(&[row("pagecache/hit", 0.78), row("pagecache/hit", 1.2)]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[2].ends_with("| yes |"), "{}", lines[2]);
        assert!(lines[3].ends_with("| **no** |"), "{}", lines[3]);
        assert!(lines[2].contains("| 41.20 |") && lines[2].contains("| 0.780 |"));
    }
}
