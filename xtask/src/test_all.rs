//! `cargo xtask test-all`: every test of the workspace.
//!
//! The run is a [`Plan`]: an [`Env`] (variables, servers, notes) and a list of [`Step`]s.
//! Test suites that need a service add to the plan rather than change it: start the server in
//! [`plan`], keep its [`ChildGuard`](crate::process::ChildGuard) in `env.servers` (stopped when
//! the plan is dropped, on every exit path), export its address in `env.vars`, say which server
//! it is in `env.notes`, and add a counted step for its tests.

use anyhow::bail;

use crate::steps::{self, Env, Runner, Step};

/// The model-checking tests of pagecache, run with its `shuttle` feature.
const SHUTTLE_TEST: &str = "pagecache/tests/shuttle_model.rs";

/// Flags of `test-all` (and of `ci`, which ends with it).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Passed to the test runners: run every test even after one fails.
    pub no_fail_fast: bool,
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

/// The plan of `test-all`.
#[expect(
    clippy::unnecessary_wraps,
    reason = "starting a server for the S3 tests (a later step) can fail here"
)]
pub fn plan(opts: &Options) -> anyhow::Result<Plan> {
    let mut env = Env::default();
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

    let shuttle = runner.step(
        "shuttle model (pagecache)",
        &[
            "-p",
            "pagecache",
            "--features",
            "shuttle",
            "--test",
            "shuttle_model",
        ],
        opts,
    );
    steps.push(if crate::project_root().join(SHUTTLE_TEST).is_file() {
        shuttle
    } else {
        shuttle.skip(format!("{SHUTTLE_TEST} does not exist yet"))
    });

    Ok(Plan { env, steps })
}

/// Runs `test-all`.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let plan = plan(opts)?;
    run_plan("test-all", plan)
}

/// Runs the steps of `plan`, stops its servers, prints the summary and fails if a step failed.
pub fn run_plan(title: &str, plan: Plan) -> anyhow::Result<()> {
    let Plan { mut env, steps } = plan;
    let report = steps::run(&steps, &mut env);
    // Servers stop before the summary, so it is the last thing printed.
    drop(env);
    report.print_summary(title);
    report.into_result()
}
