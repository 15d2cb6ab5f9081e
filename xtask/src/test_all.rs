//! `cargo xtask test-all`: every test of the workspace.
//!
//! The run is a [`Plan`]: an [`Env`] (variables, servers, notes) and a list of [`Step`]s.
//! Test suites that need a service add to the plan rather than change it: start the server in
//! [`plan`], keep its [`ChildGuard`](crate::process::ChildGuard) in `env.servers` (stopped when
//! the plan is dropped, on every exit path) and its data dir in `scratch` (removed after), export
//! its address to the step that needs it, say which server it is in `env.notes`, and add a
//! counted step for its tests.
//!
//! The S3 suite of objsync (`objsync/tests/s3_*.rs`) runs twice: in the workspace step against
//! the in-process server each test starts (what `cargo test` does), and in its own step against
//! the server [`crate::s3`] chose and started — an endpoint from the environment, `MinIO`,
//! or s3s-fs. That step must run at least one test.
//!
//! Miri's runs ([`crate::miri`]) need rustup's nightly toolchain, which [`plan`] readies as it
//! starts a server (adding Miri's components and sysroot when missing). When it cannot,
//! `test-all` skips the Miri step and says so loudly (a warning up front, a note in the summary),
//! and `ci` ([`Options::require_miri`]) fails that step instead.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::miri;
use crate::s3;
use crate::steps::{self, Env, Runner, Step};

/// The crates with model-checking tests (`<crate>/tests/shuttle_model.rs`), each built with
/// `--cfg shuttle` (see [`shuttle_build`]).
pub const SHUTTLE_CRATES: [&str; 2] = ["pagecache", "segcache"];

/// Makes `step` (a cargo command that builds) build with `--cfg shuttle`, which swaps the locks of
/// pagecache and segcache for shuttle's: adds the flag to the user's `RUSTFLAGS` and builds in a
/// target directory of its own (`<target>/shuttle`), since other flags would make cargo rebuild
/// the normal build's artifacts in place. The `--target-dir` goes at the end of `step`'s
/// arguments, so `step` must not have a `--` yet.
pub fn shuttle_build(step: Step) -> Step {
    let (key, value) = steps::rustflags_with(&["--cfg", "shuttle"]);
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::project_root().join("target"), PathBuf::from)
        .join("shuttle");
    step.env(key, value)
        .args([OsStr::new("--target-dir"), target.as_os_str()])
}

/// How long the soak step runs, in seconds.
const SOAK_SECONDS: &str = "10";

/// Flags of `test-all` (and of `ci`, which ends with it, and of `miri`).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Passed to the test runners: run every test even after one fails.
    pub no_fail_fast: bool,
    /// Whether the run fails when Miri cannot run (`ci`), rather than skipping it loudly
    /// (`test-all`). Not a command-line flag.
    pub require_miri: bool,
}

impl Options {
    /// Parses the arguments after the command name.
    pub fn parse(args: &[&str]) -> anyhow::Result<Self> {
        let mut opts = Self::default();
        for &arg in args {
            match arg {
                "--no-fail-fast" => opts.no_fail_fast = true,
                other => bail!("unknown option `{other}` (see `cargo xtask help`)"),
            }
        }
        Ok(opts)
    }
}

/// The steps of a run and what they share.
#[derive(Debug)]
pub struct Plan {
    /// Variables, servers and notes shared by the steps.
    pub env: Env,
    /// In order.
    pub steps: Vec<Step>,
    /// Scratch directories of the servers in `env` (their data dirs). Declared after `env`, so
    /// a dropped plan stops the servers before it removes their files.
    pub scratch: Vec<TempDir>,
}

/// Which runner executes the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TestCmd {
    Nextest,
    /// `cargo test`, when cargo-nextest is not installed.
    CargoTest,
}

impl TestCmd {
    fn detect() -> Self {
        let found = crate::cargo_command()
            .args(["nextest", "--version"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if found {
            Self::Nextest
        } else {
            Self::CargoTest
        }
    }

    /// A counted step running this runner with `args` (package and target selection).
    fn step(self, name: &str, args: &[&str], opts: &Options) -> Step {
        let step = match self {
            Self::Nextest => Step::cargo(name, ["nextest", "run"]).counts_tests(Runner::Nextest),
            Self::CargoTest => Step::cargo(name, ["test"]).counts_tests(Runner::Libtest),
        };
        let step = step.args(args);
        if opts.no_fail_fast {
            step.args(["--no-fail-fast"])
        } else {
            step
        }
    }
}

/// The plan of `test-all`. Starts the S3 server of the S3 step (see [`crate::s3`]).
pub fn plan(opts: &Options) -> anyhow::Result<Plan> {
    let mut env = Env::default();
    let mut scratch = Vec::new();
    let runner = TestCmd::detect();
    if runner == TestCmd::CargoTest {
        env.notes.push(
            "`cargo nextest --version` failed: ran the tests with `cargo test` instead \
             (install cargo-nextest for the usual runner)"
                .into(),
        );
    }

    let mut steps = vec![
        // Unit, integration and example targets; bench targets run once each in test mode.
        runner.step(
            "tests (workspace, all targets)",
            &["--workspace", "--all-targets"],
            opts,
        ),
        // nextest does not run doctests.
        Step::cargo("doctests", ["test", "--workspace", "--doc"])
            .counts_tests(Runner::Libtest)
            .args(opts.no_fail_fast.then_some("--no-fail-fast")),
    ];

    for krate in SHUTTLE_CRATES {
        // Without `--cfg shuttle` the model test compiles to nothing: a count of zero means the
        // flag did not reach the build.
        let shuttle = shuttle_build(runner.step(
            &format!("shuttle model ({krate})"),
            &["-p", krate, "--test", "shuttle_model"],
            opts,
        ))
        .requires_tests();
        let test = format!("{krate}/tests/shuttle_model.rs");
        steps.push(if crate::project_root().join(&test).is_file() {
            shuttle
        } else {
            shuttle.skip(format!("{test} does not exist yet"))
        });
    }

    // The unsafe code's tests under Miri (see `crate::miri`), when a nightly toolchain is here;
    // the components and Miri's sysroot are installed now if missing.
    let (miri_steps, miri_notes) = miri::steps_for(
        miri::prepare(&miri::Tools::from_path()),
        opts.require_miri,
        opts,
    );
    steps.extend(miri_steps);
    env.notes.extend(miri_notes);

    // A short soak: faults and crashes under concurrent readers and writers, every byte
    // checked (see `crate::soak`). It fails the run when it loses or corrupts anything.
    steps.push(Step::xtask(
        format!("soak ({SOAK_SECONDS} s)"),
        ["soak", "--seconds", SOAK_SECONDS],
    ));

    let s3_tests = s3_test_targets(&crate::project_root().join(S3_TESTS_DIR))?;
    let server = s3::start(&s3::Vars::from_process()).context("starting the S3 server")?;
    eprintln!("xtask: S3 server: {}", server.description);
    env.notes.push(format!("S3 server: {}", server.description));
    let args = match runner {
        // The workspace step's exact target selection, so its build is reused as it is (no
        // feature set of its own to build), with a filter that runs the S3 binaries only.
        // nextest does not count the tests of filtered-out binaries as skipped.
        TestCmd::Nextest => vec![
            "--workspace".to_owned(),
            "--all-targets".to_owned(),
            "-E".to_owned(),
            format!("package(objsync) and binary(/^({})$/)", s3_tests.join("|")),
        ],
        // libtest would count every other binary's tests as filtered: name the S3 ones.
        TestCmd::CargoTest => {
            let mut args = vec!["--workspace".to_owned()];
            for name in &s3_tests {
                args.extend(["--test".to_owned(), name.clone()]);
            }
            args
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut step = runner
        .step(
            &format!("S3 suite (objsync) against {}", server.kind),
            &args,
            opts,
        )
        .requires_tests();
    for (key, value) in &server.vars {
        step = step.env(key, value);
    }
    steps.push(step);
    let (guards, dir) = server.into_parts();
    env.servers.extend(guards);
    scratch.extend(dir);

    Ok(Plan {
        env,
        steps,
        scratch,
    })
}

/// Where the S3 suite lives: one `s3_*.rs` file per scenario.
const S3_TESTS_DIR: &str = "objsync/tests";

/// The names of the S3 suite's test targets (`s3_*.rs` in `dir`), sorted.
fn s3_test_targets(dir: &Path) -> anyhow::Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".rs")
            && stem.starts_with("s3_")
        {
            names.push(stem.to_owned());
        }
    }
    if names.is_empty() {
        bail!("no S3 suite: {} has no s3_*.rs test", dir.display());
    }
    names.sort();
    Ok(names)
}

/// Runs `test-all`.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let plan = plan(opts)?;
    run_plan("test-all", plan)
}

/// Runs the steps of `plan`, stops its servers, prints the summary and fails if a step failed.
pub fn run_plan(title: &str, plan: Plan) -> anyhow::Result<()> {
    let Plan {
        mut env,
        steps,
        scratch,
    } = plan;
    let report = steps::run(&steps, &mut env);
    // Servers stop before the summary, so it is the last thing printed; their files go after.
    drop(env);
    drop(scratch);
    report.print_summary(title);
    report.into_result()
}
