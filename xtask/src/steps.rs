//! A command is a list of [`Step`]s run in an [`Env`]; each step is one external command.
//!
//! Steps run in order and a failed step does not stop the next ones (the summary then tells
//! everything that is wrong at once); the run fails if any step failed. Steps that run tests
//! ([`Step::counts_tests`]) have their output passed through line by line and their runner's
//! closing lines read, so the summary can say how many tests ran.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::io::{self, BufRead as _, BufReader, IsTerminal as _, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::process::ChildGuard;

/// One external command of a run.
#[derive(Debug, Clone)]
pub struct Step {
    /// Shown in progress lines and the summary.
    pub name: String,
    /// The program; [`crate::cargo`] for cargo steps.
    pub program: OsString,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Variables for this step only, on top of the [`Env`]'s.
    pub env: Vec<(OsString, OsString)>,
    /// Which test runner's closing lines to read, if the step runs tests.
    pub counts: Option<Runner>,
    /// When set, the step is not run and the summary gives this reason.
    pub skip: Option<String>,
    /// When set, the step is not run and fails with this reason (something it needs could not
    /// be had).
    pub fail: Option<String>,
    /// Whether the step fails when its runner ran no test.
    pub requires_tests: bool,
}

impl Step {
    /// A `cargo <args>` step.
    pub fn cargo<I, S>(name: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Self {
            name: name.into(),
            program: crate::cargo(),
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            env: Vec::new(),
            counts: None,
            skip: None,
            fail: None,
            requires_tests: false,
        }
    }

    /// An `xtask <args>` step: the program at this process's executable path again (a build
    /// of the same sources, even if a cargo step rebuilt it meanwhile), so the step needs no
    /// build of its own. When that path cannot be read, `cargo run -q -p xtask --` instead.
    pub fn xtask<I, S>(name: impl Into<String>, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        // After a rebuild replaced the file, Linux reports the old path + " (deleted)".
        match std::env::current_exe().ok().filter(|exe| exe.is_file()) {
            Some(exe) => Self {
                program: exe.into(),
                ..Self::cargo(name, args)
            },
            None => Self::cargo(name, ["run", "-q", "-p", "xtask", "--"]).args(args),
        }
    }

    /// Appends arguments.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets a variable for this step only.
    #[must_use]
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Marks the step as running tests with `runner`, whose pass/fail counts are collected.
    #[must_use]
    pub fn counts_tests(mut self, runner: Runner) -> Self {
        self.counts = Some(runner);
        self
    }

    /// Makes the step fail when its runner ran no test (a suite that must not vanish quietly).
    #[must_use]
    pub fn requires_tests(mut self) -> Self {
        self.requires_tests = true;
        self
    }

    /// Skips the step, saying why in the summary.
    #[must_use]
    pub fn skip(mut self, reason: impl Into<String>) -> Self {
        self.skip = Some(reason.into());
        self
    }

    /// Fails the step without running it, for `reason`.
    #[must_use]
    pub fn fail(mut self, reason: impl Into<String>) -> Self {
        self.fail = Some(reason.into());
        self
    }

    /// The command line, for progress messages.
    fn display(&self) -> String {
        let program = Path::new(&self.program)
            .file_name()
            .unwrap_or(self.program.as_os_str())
            .to_string_lossy()
            .into_owned();
        let mut line = program;
        for arg in &self.args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }
}

/// What every step of a run shares: variables, and the servers the steps talk to.
///
/// A server (say, an S3 server for integration tests) is started before the steps, its
/// [`ChildGuard`] kept in `servers` so it lives exactly as long as the `Env`, its endpoint and
/// credentials put in `vars`, and a line about it in `notes` for the summary.
#[derive(Debug, Default)]
pub struct Env {
    /// Variables set for every step.
    pub vars: Vec<(OsString, OsString)>,
    /// Processes that must outlive the steps; stopped when the `Env` is dropped.
    pub servers: Vec<ChildGuard>,
    /// Lines for the summary (which server was used, what was skipped and why).
    pub notes: Vec<String>,
}

impl Env {
    /// The name of a server that has exited (or cannot be checked), if any.
    fn dead_server(&mut self) -> Option<String> {
        self.servers
            .iter_mut()
            .find_map(|server| match server.is_running() {
                Ok(true) => None,
                _ => Some(server.name().to_owned()),
            })
    }
}

/// A test runner whose closing lines give the number of tests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// `cargo nextest run`: one `Summary [..] N tests run: N passed, N failed, N skipped` line.
    Nextest,
    /// libtest (`cargo test`): a `test result: ok. N passed; N failed; N ignored; ..` line per
    /// test binary.
    Libtest,
}

/// Test counts read from a runner's output.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TestCounts {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed or timed out.
    pub failed: u64,
    /// Tests skipped or ignored.
    pub skipped: u64,
}

impl TestCounts {
    /// Tests that ran (passed or failed).
    pub fn ran(self) -> u64 {
        self.passed + self.failed
    }

    fn add(&mut self, other: TestCounts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }

    /// Reads the counts from one line of `runner`'s output, if it is a closing line.
    pub fn parse_line(runner: Runner, line: &str) -> Option<Self> {
        let line = line.trim();
        let counts = match runner {
            Runner::Nextest => {
                if !line.starts_with("Summary [") {
                    return None;
                }
                // "Summary [   0.015s] 3 tests run: 2 passed, 1 failed, 0 skipped"
                line.split_once("run:")?.1
            }
            Runner::Libtest => line.strip_prefix("test result:")?,
        };
        let mut out = Self::default();
        let mut found = false;
        for part in counts.split([',', ';', '.']) {
            let part = part.trim();
            let Some((number, what)) = part.split_once(' ') else {
                continue;
            };
            let Ok(n) = number.parse::<u64>() else {
                continue;
            };
            // "1 passed (1 flaky)" and the like: only the first word names the count.
            match what.split_whitespace().next() {
                Some("passed") => out.passed += n,
                Some("failed" | "timed") => out.failed += n,
                Some("skipped" | "ignored") => out.skipped += n,
                _ => continue,
            }
            found = true;
        }
        found.then_some(out)
    }
}

/// How a step ended.
#[derive(Debug, Clone)]
pub enum Status {
    /// Exited with success.
    Ok,
    /// Exited with failure, or could not be started.
    Failed(String),
    /// Not run; the reason.
    Skipped(String),
}

/// The outcome of one step.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The step's name.
    pub name: String,
    /// How it ended.
    pub status: Status,
    /// How long it ran.
    pub duration: Duration,
    /// Test counts, for steps that run tests and whose runner printed its closing line.
    pub tests: Option<TestCounts>,
    /// Whether the step runs tests (so missing counts are worth a word).
    pub counts_tests: bool,
}

/// The outcomes of a run, in step order.
#[derive(Debug, Default)]
pub struct Report {
    /// One per step.
    pub outcomes: Vec<Outcome>,
    /// The `Env`'s notes, copied for the summary.
    pub notes: Vec<String>,
}

/// Runs `steps` in order in `env`, printing a header before each. A step whose servers are no
/// longer running fails without being run.
pub fn run(steps: &[Step], env: &mut Env) -> Report {
    let total = steps.len();
    let mut report = Report {
        outcomes: Vec::with_capacity(total),
        notes: env.notes.clone(),
    };
    for (i, step) in steps.iter().enumerate() {
        let header = format!("[{}/{total}] {}", i + 1, step.name);
        if let Some(reason) = &step.skip {
            eprintln!("\n==> {header}: skipped: {reason}");
            report.outcomes.push(Outcome {
                name: step.name.clone(),
                status: Status::Skipped(reason.clone()),
                duration: Duration::ZERO,
                tests: None,
                counts_tests: step.counts.is_some(),
            });
            continue;
        }
        if let Some(reason) = &step.fail {
            eprintln!("\n==> {header}: FAILED without running: {reason}");
            report.outcomes.push(Outcome {
                name: step.name.clone(),
                status: Status::Failed(reason.clone()),
                duration: Duration::ZERO,
                tests: None,
                counts_tests: false,
            });
            continue;
        }
        eprintln!("\n==> {header}: {}", step.display());
        let start = Instant::now();
        let outcome = match env.dead_server() {
            Some(dead) => Err(anyhow::anyhow!("{dead} is no longer running")),
            None => run_one(step, env),
        };
        let (status, tests) = match outcome {
            Ok((true, tests)) if step.requires_tests && tests.is_none_or(|t| t.ran() == 0) => (
                Status::Failed("no test ran, and this step must run some".into()),
                tests,
            ),
            Ok((true, tests)) => (Status::Ok, tests),
            Ok((false, tests)) => (Status::Failed("exited with failure".into()), tests),
            Err(err) => (Status::Failed(format!("{err:#}")), None),
        };
        let duration = start.elapsed();
        // Every step's time as it ends, not only in the summary: long steps (Miri, the S3 suite)
        // are easier to follow, and a run cut short still shows what the finished steps took.
        match &status {
            Status::Failed(why) => {
                eprintln!(
                    "==> {header}: FAILED ({why}) after {}",
                    fmt_duration(duration)
                );
            }
            Status::Ok => eprintln!("==> {header}: ok after {}", fmt_duration(duration)),
            // Skipped steps never got this far.
            Status::Skipped(_) => {}
        }
        report.outcomes.push(Outcome {
            name: step.name.clone(),
            status,
            duration,
            tests,
            counts_tests: step.counts.is_some(),
        });
    }
    report
}

/// Runs one step; returns whether it succeeded and, for test steps, the counts.
fn run_one(step: &Step, env: &Env) -> anyhow::Result<(bool, Option<TestCounts>)> {
    let mut cmd = Command::new(&step.program);
    cmd.args(&step.args).current_dir(crate::project_root());
    cmd.envs(env.vars.iter().map(|(k, v)| (k, v)));
    cmd.envs(step.env.iter().map(|(k, v)| (k, v)));
    let Some(runner) = step.counts else {
        let mut child = ChildGuard::spawn(&step.name, cmd)?;
        let status = child.wait().context("waiting for the step")?;
        return Ok((status.success(), None));
    };

    // The output goes through pipes so the closing lines can be read; keep colours for a
    // terminal, which the runners would otherwise drop when writing to a pipe.
    if io::stderr().is_terminal() && std::env::var_os("CARGO_TERM_COLOR").is_none() {
        cmd.env("CARGO_TERM_COLOR", "always");
    }
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ChildGuard::spawn(&step.name, cmd)?;
    let stdout = child.child_mut().stdout.take().context("no stdout pipe")?;
    let stderr = child.child_mut().stderr.take().context("no stderr pipe")?;
    let (from_stdout, from_stderr) = thread::scope(|s| {
        let out = s.spawn(|| pump(stdout, io::stdout(), runner));
        let err = s.spawn(|| pump(stderr, io::stderr(), runner));
        (out.join(), err.join())
    });
    let status = child.wait().context("waiting for the step")?;
    let mut counts: Option<TestCounts> = None;
    for found in [from_stdout, from_stderr] {
        let found = found
            .map_err(|_| anyhow::anyhow!("output reader panicked"))?
            .context("copying the step's output")?;
        if let Some(found) = found {
            counts.get_or_insert_with(TestCounts::default).add(found);
        }
    }
    Ok((status.success(), counts))
}

/// Copies `from` to `to` line by line, adding up the counts of `runner`'s closing lines.
///
/// If `to` fails (say, xtask's output piped into `head`), the rest is still read and counted:
/// a child blocked on a full pipe would never exit.
fn pump(from: impl Read, mut to: impl Write, runner: Runner) -> io::Result<Option<TestCounts>> {
    let mut reader = BufReader::new(from);
    let mut line = Vec::new();
    let mut counts: Option<TestCounts> = None;
    let mut writable = true;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(counts);
        }
        writable = writable && to.write_all(&line).and_then(|()| to.flush()).is_ok();
        let text = strip_ansi(&String::from_utf8_lossy(&line));
        if let Some(found) = TestCounts::parse_line(runner, &text) {
            counts.get_or_insert_with(TestCounts::default).add(found);
        }
    }
}

/// Removes ANSI escape sequences (`ESC [ ... final-byte`), which coloured output puts between
/// the words of a closing line.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            // Parameters and intermediates, then one final byte in '@'..='~'.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    out
}

impl Report {
    /// Whether every step that ran succeeded.
    pub fn success(&self) -> bool {
        !self
            .outcomes
            .iter()
            .any(|o| matches!(o.status, Status::Failed(_)))
    }

    /// The tests counted over all steps, or `None` if a test step ran without its runner's
    /// closing line (then any total would understate).
    pub fn total_tests(&self) -> Option<TestCounts> {
        let mut total = TestCounts::default();
        let mut any = false;
        for outcome in &self.outcomes {
            if !outcome.counts_tests || matches!(outcome.status, Status::Skipped(_)) {
                continue;
            }
            total.add(outcome.tests?);
            any = true;
        }
        any.then_some(total)
    }

    /// Prints the summary table, the notes and, when the tests were counted, a closing
    /// `<title>: N passed, N failed, N skipped` line.
    pub fn print_summary(&self, title: &str) {
        let width = self
            .outcomes
            .iter()
            .map(|o| o.name.len())
            .max()
            .unwrap_or(0);
        let mut out = format!("\n{title} summary:\n");
        for o in &self.outcomes {
            let (status, detail) = match &o.status {
                Status::Ok => ("ok", String::new()),
                Status::Failed(why) => ("FAILED", why.clone()),
                Status::Skipped(why) => ("skipped", why.clone()),
            };
            let time = if matches!(o.status, Status::Skipped(_)) {
                "-".to_owned()
            } else {
                fmt_duration(o.duration)
            };
            let mut detail = detail;
            if let Some(t) = o.tests {
                let counts = format!(
                    "{} passed, {} failed, {} skipped",
                    t.passed, t.failed, t.skipped
                );
                detail = if detail.is_empty() {
                    counts
                } else {
                    format!("{counts}; {detail}")
                };
            } else if o.counts_tests && !matches!(o.status, Status::Skipped(_)) {
                let missing = "no test count found in the output";
                detail = if detail.is_empty() {
                    missing.to_owned()
                } else {
                    format!("{detail}; {missing}")
                };
            }
            let line = format!("  {:<width$}  {status:<7}  {time:>8}  {detail}", o.name);
            let _ = writeln!(out, "{}", line.trim_end());
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        let verdict = if self.success() { "ok" } else { "FAILED" };
        let _ = writeln!(out, "{title}: {verdict}");
        // The last line is the plain count that CI and people read.
        if let Some(t) = self.total_tests() {
            let _ = writeln!(
                out,
                "{title}: {} passed, {} failed, {} skipped",
                t.passed, t.failed, t.skipped
            );
        }
        print!("{out}");
    }

    /// `Ok` if every step succeeded, else an error naming the failed steps.
    pub fn into_result(self) -> anyhow::Result<()> {
        let failed: Vec<&str> = self
            .outcomes
            .iter()
            .filter(|o| matches!(o.status, Status::Failed(_)))
            .map(|o| o.name.as_str())
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("failed: {}", failed.join(", "))
        }
    }
}

/// The variable and value that add `flags` to every rustc call of a cargo step while keeping the
/// user's own: cargo reads `CARGO_ENCODED_RUSTFLAGS` (flags separated by `0x1f`) in preference to
/// `RUSTFLAGS`, so the flags go into whichever of the two it will read. (Either variable, once
/// set, makes cargo ignore `build.rustflags` from its config files, as it always does.)
pub fn rustflags_with(flags: &[&str]) -> (OsString, OsString) {
    rustflags_over(
        std::env::var_os("CARGO_ENCODED_RUSTFLAGS"),
        std::env::var_os("RUSTFLAGS"),
        flags,
    )
}

/// [`rustflags_with`] over given values of `CARGO_ENCODED_RUSTFLAGS` and `RUSTFLAGS`.
fn rustflags_over(
    encoded: Option<OsString>,
    plain: Option<OsString>,
    flags: &[&str],
) -> (OsString, OsString) {
    match encoded {
        Some(mut value) => {
            for flag in flags {
                if !value.is_empty() {
                    value.push("\x1f");
                }
                value.push(flag);
            }
            ("CARGO_ENCODED_RUSTFLAGS".into(), value)
        }
        None => ("RUSTFLAGS".into(), append_flags(plain, flags)),
    }
}

/// `value` (a variable's, or none) with `flags` appended, space-separated: for variables of
/// whitespace-separated flags such as `MIRIFLAGS`, so the user's own flags are kept.
pub fn append_flags(value: Option<OsString>, flags: &[&str]) -> OsString {
    let mut value = value.unwrap_or_default();
    for flag in flags {
        if !value.is_empty() {
            value.push(" ");
        }
        value.push(flag);
    }
    value
}

/// `1.2s`, `3m04s`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = d.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// `512 B`, `3.4 KiB`, `1.2 GiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_formatted() {
        assert_eq!(fmt_bytes(0), "0 B");
        assert_eq!(fmt_bytes(1023), "1023 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(5 << 20), "5.0 MiB");
    }

    #[test]
    fn flags_are_appended_to_the_users() {
        let shuttle = ["--cfg", "shuttle"];
        assert_eq!(
            rustflags_over(None, None, &shuttle),
            ("RUSTFLAGS".into(), "--cfg shuttle".into())
        );
        assert_eq!(
            rustflags_over(None, Some("-C target-cpu=native".into()), &shuttle),
            (
                "RUSTFLAGS".into(),
                "-C target-cpu=native --cfg shuttle".into()
            )
        );
        // cargo reads the encoded variable first, even when RUSTFLAGS is set too.
        assert_eq!(
            rustflags_over(
                Some("-C\x1ftarget-cpu=native".into()),
                Some("-O".into()),
                &shuttle
            ),
            (
                "CARGO_ENCODED_RUSTFLAGS".into(),
                "-C\x1ftarget-cpu=native\x1f--cfg\x1fshuttle".into()
            )
        );
        assert_eq!(
            rustflags_over(Some(OsString::new()), None, &shuttle),
            ("CARGO_ENCODED_RUSTFLAGS".into(), "--cfg\x1fshuttle".into())
        );
        assert_eq!(
            append_flags(Some("-Zmiri-seed=7".into()), &["-Zmiri-tree-borrows"]),
            "-Zmiri-seed=7 -Zmiri-tree-borrows"
        );
    }

    #[test]
    fn xtask_steps_rerun_this_executable() {
        let step = Step::xtask("soak", ["soak", "--seconds", "1"]);
        assert_eq!(
            step.program,
            std::env::current_exe().unwrap().into_os_string()
        );
        assert_eq!(step.args, ["soak", "--seconds", "1"]);
        assert!(step.counts.is_none() && step.skip.is_none());
    }

    #[test]
    fn nextest_closing_lines() {
        let ok = "     Summary [   0.015s] 3 tests run: 3 passed, 0 skipped";
        assert_eq!(
            TestCounts::parse_line(Runner::Nextest, ok),
            Some(TestCounts {
                passed: 3,
                failed: 0,
                skipped: 0
            })
        );
        let bad =
            "     Summary [  12.001s] 10 tests run: 7 passed, 2 failed, 1 timed out, 4 skipped";
        assert_eq!(
            TestCounts::parse_line(Runner::Nextest, bad),
            Some(TestCounts {
                passed: 7,
                failed: 3,
                skipped: 4
            })
        );
        // Other nextest lines, and libtest lines, are not nextest closing lines.
        assert_eq!(
            TestCounts::parse_line(Runner::Nextest, "    Starting 3 tests across 2 binaries"),
            None
        );
        assert_eq!(
            TestCounts::parse_line(Runner::Nextest, "test result: ok. 1 passed; 0 failed"),
            None
        );
    }

    #[test]
    fn libtest_closing_lines() {
        let line = "test result: ok. 5 passed; 1 failed; 2 ignored; 0 measured; 3 filtered out; finished in 0.21s";
        assert_eq!(
            TestCounts::parse_line(Runner::Libtest, line),
            Some(TestCounts {
                passed: 5,
                failed: 1,
                skipped: 2
            })
        );
        assert_eq!(
            TestCounts::parse_line(Runner::Libtest, "running 5 tests"),
            None
        );
    }

    #[test]
    fn ansi_codes_are_removed() {
        let coloured =
            "\x1b[32;1m     Summary\x1b[0m [   0.015s] \x1b[1m3\x1b[0m tests run: 3 passed";
        assert_eq!(
            strip_ansi(coloured),
            "     Summary [   0.015s] 3 tests run: 3 passed"
        );
    }

    #[test]
    fn a_step_that_must_run_tests_fails_when_none_ran() {
        // nextest-style closing lines: were this test run by libtest under a `cargo test`
        // step, its output would reach that step's reader, which only reads libtest lines.
        let sh = |name: &str, script: &str| Step {
            name: name.into(),
            program: "sh".into(),
            args: vec!["-c".into(), script.into()],
            env: Vec::new(),
            counts: Some(Runner::Nextest),
            skip: None,
            fail: None,
            requires_tests: true,
        };
        let steps = [
            sh(
                "none",
                "echo 'Summary [ 0.001s] 0 tests run: 0 passed, 3 skipped'",
            ),
            sh("silent", "true"),
            sh(
                "two",
                "echo 'Summary [ 0.001s] 2 tests run: 2 passed, 0 skipped'",
            ),
        ];
        let report = run(&steps, &mut Env::default());
        let failed: Vec<bool> = report
            .outcomes
            .iter()
            .map(|o| matches!(o.status, Status::Failed(_)))
            .collect();
        assert_eq!(failed, [true, true, false]);
    }

    #[test]
    fn totals_need_every_test_step_counted() {
        let step = |tests, counts_tests| Outcome {
            name: "s".into(),
            status: Status::Ok,
            duration: Duration::ZERO,
            tests,
            counts_tests,
        };
        let two = TestCounts {
            passed: 2,
            failed: 0,
            skipped: 1,
        };
        let mut report = Report {
            outcomes: vec![
                step(Some(two), true),
                step(None, false),
                step(Some(two), true),
            ],
            notes: Vec::new(),
        };
        assert_eq!(
            report.total_tests(),
            Some(TestCounts {
                passed: 4,
                failed: 0,
                skipped: 2
            })
        );
        report.outcomes.push(step(None, true));
        assert_eq!(report.total_tests(), None);
    }
}
