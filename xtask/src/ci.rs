//! `cargo xtask ci`: formatting, lints and rustdoc with warnings denied, then every test
//! (`test-all`, Miri included: here a Miri that cannot run fails the run).

use crate::steps::Step;
use crate::test_all;

/// Runs `ci`: the checks, then the steps of `test-all`, with one summary for all of them.
pub fn run(opts: &test_all::Options) -> anyhow::Result<()> {
    let opts = test_all::Options {
        require_miri: true,
        ..opts.clone()
    };
    let mut plan = test_all::plan(&opts)?;
    let mut checks = vec![
        Step::cargo("fmt", ["fmt", "--all", "--", "--check"]),
        Step::cargo(
            "clippy (workspace, all targets)",
            [
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        // Broken intra-doc links, unclosed HTML tags in docs and the like are rustdoc warnings,
        // which clippy does not report. RUSTDOCFLAGS is set for this step only, so the doctests
        // of `test-all` build as they do anywhere else.
        Step::cargo("doc (workspace)", ["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"),
    ];
    // `--cfg shuttle` swaps a crate's locks and atomics for shuttle's: lint that build too (and
    // its model test, which is empty without the cfg).
    for krate in test_all::SHUTTLE_CRATES {
        let clippy = Step::cargo(
            format!("clippy ({krate}, --cfg shuttle)"),
            ["clippy", "-p", krate, "--all-targets"],
        );
        checks.push(test_all::shuttle_build(clippy).args(["--", "-D", "warnings"]));
    }
    plan.steps.splice(0..0, checks);
    test_all::run_plan("ci", plan)
}
