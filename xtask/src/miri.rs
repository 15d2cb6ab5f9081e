//! `cargo xtask miri`: the tests that exercise the workspace's `unsafe` code, interpreted by Miri
//! under both of its aliasing models, Stacked Borrows (its default) and Tree Borrows. The two
//! reject different patterns (Stacked Borrows is stricter about references made from raw
//! pointers, Tree Borrows about some writes through shared ones), so a bug one of them misses the
//! other may catch.
//!
//! What runs, each under both models:
//! - pagecache: `--lib --test miri`, the frame references behind `PageRef` (`attach`);
//! - blockcache: `--lib --test miri`, `Block`'s views into pages and its copies across pages;
//! - segcache: the unit tests of its `map` module, the mapping that `SegmentRef`s borrow. Miri
//!   cannot map files; under Miri, `Mapping::map` copies the file into an anonymous mapping and
//!   runs the same code over it.
//!
//! Miri interprets, far slower than native code, so these are the few tests written for it (plus
//! the crates' small unit tests), not the whole suites. cargo miri builds into `target/miri`, so
//! the normal build's cache is left alone.
//!
//! Miri needs rustup's nightly toolchain with its `miri` and `rust-src` components, and a
//! sysroot built by `cargo miri setup` (once per toolchain, kept in `~/.cache/miri`).
//! [`prepare`] checks each, installs the components when they are missing and builds the
//! sysroot; without a nightly toolchain, or when the install fails, it says why. Then
//! `cargo xtask miri` fails, `test-all` reports the Miri step as skipped (a warning up front and
//! a note in the summary), and `ci` fails that step.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::process::ChildGuard;
use crate::steps::{self, Env, Runner, Step, fmt_duration};
use crate::test_all::{self, Options, Plan};

/// The components Miri needs on the nightly toolchain.
const COMPONENTS: [&str; 2] = ["miri", "rust-src"];

/// One `cargo miri test` of a crate.
struct Run {
    /// For step names.
    label: &'static str,
    krate: &'static str,
    /// Its integration test of unsafe code, `<crate>/tests/<name>.rs`, if it has one.
    test: Option<&'static str>,
    /// Runs only the tests whose names contain this (a module path), if set.
    filter: Option<&'static str>,
    /// The `MIRIFLAGS` this run needs (see [`RUNS`] for why).
    flags: &'static [&'static str],
}

/// The runs, each under both [`MODELS`].
///
/// segcache's `map` tests create, read and stat files, which Miri's isolation (on by default)
/// forbids: that run has `-Zmiri-disable-isolation`. pagecache's and blockcache's tests work on
/// in-memory backends and keep isolation, which makes their runs deterministic (a seeded
/// scheduler and RNG, a virtual clock) and fails any test that reaches the host (a file, the
/// wall clock) instead of passing with an unchecked call.
///
/// Provenance stays at Miri's default: it warns about `parking_lot_core`'s integer-to-pointer
/// casts (its queue of parked threads, when a lock is contended) and goes on.
/// `-Zmiri-strict-provenance` would reject those casts outright, and
/// `-Zmiri-permissive-provenance` would silence the warning for our own code as well.
const RUNS: [Run; 3] = [
    Run {
        label: "pagecache",
        krate: "pagecache",
        test: Some("miri"),
        filter: None,
        flags: &[],
    },
    Run {
        label: "blockcache",
        krate: "blockcache",
        test: Some("miri"),
        filter: None,
        flags: &[],
    },
    Run {
        label: "segcache map",
        krate: "segcache",
        test: None,
        filter: Some("map::tests::"),
        flags: &["-Zmiri-disable-isolation"],
    },
];

/// The aliasing models, by name, with the flags that select them.
const MODELS: [(&str, &[&str]); 2] = [
    ("Stacked Borrows", &[]),
    ("Tree Borrows", &["-Zmiri-tree-borrows"]),
];

/// The programs Miri is reached through: `rustup`, and the `cargo` of rustup's proxies (which
/// takes `+nightly`; the `$CARGO` running xtask is the stable toolchain's own and does not).
#[derive(Debug, Clone)]
pub struct Tools {
    rustup: OsString,
    cargo: OsString,
}

impl Tools {
    /// `rustup` and `cargo` from `PATH`.
    pub fn from_path() -> Self {
        Self {
            rustup: "rustup".into(),
            cargo: "cargo".into(),
        }
    }

    /// `rustup <args>`; never installs a toolchain on its own.
    fn rustup<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(&self.rustup);
        cmd.args(args)
            .env("RUSTUP_AUTO_INSTALL", "0")
            .current_dir(crate::project_root());
        cmd
    }

    /// A `cargo +nightly miri <args>` step.
    fn miri_step(&self, name: String, args: &[&str]) -> Step {
        Step {
            program: self.cargo.clone(),
            ..Step::cargo(name, ["+nightly", "miri"])
        }
        .args(args)
        .env("RUSTUP_AUTO_INSTALL", "0")
    }
}

/// Miri, ready to run.
#[derive(Debug)]
pub struct Ready {
    /// For the summary: the toolchain, what was installed, how long the preparation took.
    pub note: String,
}

/// Makes Miri runnable: checks for the nightly toolchain, installs `miri` and `rust-src` on it
/// when missing (`rustup component add`), then runs `cargo +nightly miri setup`, printing what
/// it does. The error says what is missing or which command failed.
pub fn prepare(tools: &Tools) -> anyhow::Result<Ready> {
    let start = Instant::now();
    let version = match output(tools.rustup(["run", "nightly", "rustc", "--version"])) {
        Err(err) => bail!(
            "cannot run rustup ({err:#}); Miri needs rustup's nightly toolchain with the \
             miri and rust-src components"
        ),
        Ok(out) if !out.status.success() => bail!(
            "no nightly toolchain (`rustup run nightly rustc --version`: {}); Miri needs one, \
             e.g. `rustup toolchain install nightly --component miri,rust-src`",
            first_line(&out)
        ),
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    };
    eprintln!("xtask: Miri: {version}");

    let list = output(tools.rustup(["component", "list", "--toolchain", "nightly", "--installed"]))
        .context("listing the nightly toolchain's components")?;
    if !list.status.success() {
        bail!(
            "`rustup component list --toolchain nightly --installed` failed: {}",
            first_line(&list)
        );
    }
    let missing = missing_components(&String::from_utf8_lossy(&list.stdout));
    let installed = if missing.is_empty() {
        "miri and rust-src already installed".to_owned()
    } else {
        let mut args = vec!["component", "add", "--toolchain", "nightly"];
        args.extend(&missing);
        let line = format!("rustup {}", args.join(" "));
        eprintln!(
            "xtask: Miri: the nightly toolchain lacks {}: {line}",
            missing.join(", ")
        );
        let began = Instant::now();
        run_shown(&line, tools.rustup(&args))?;
        format!(
            "installed {} ({})",
            missing.join(", "),
            fmt_duration(began.elapsed())
        )
    };

    let began = Instant::now();
    let mut setup = Command::new(&tools.cargo);
    setup
        .args(["+nightly", "miri", "setup"])
        .env("RUSTUP_AUTO_INSTALL", "0")
        .current_dir(crate::project_root());
    eprintln!("xtask: Miri: cargo +nightly miri setup");
    run_shown("cargo +nightly miri setup", setup)?;
    let setup_time = began.elapsed();

    let note = format!(
        "Miri: {version}; {installed}; `cargo miri setup` {}; ready in {}",
        fmt_duration(setup_time),
        fmt_duration(start.elapsed())
    );
    Ok(Ready { note })
}

/// The ones of [`COMPONENTS`] not in `rustup component list --installed`'s output, whose lines
/// name a component with its target (`miri-x86_64-unknown-linux-gnu`) or without (`rust-src`).
fn missing_components(list: &str) -> Vec<&'static str> {
    COMPONENTS
        .into_iter()
        .filter(|&wanted| {
            !list.lines().map(str::trim).any(|line| {
                line.strip_prefix(wanted)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'))
            })
        })
        .collect()
}

/// Runs a short command and collects its output.
fn output(mut cmd: Command) -> anyhow::Result<Output> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.output()
        .with_context(|| format!("cannot start {program}"))
}

/// The first line of a failed command's stderr (or stdout), or its exit status.
fn first_line(out: &Output) -> String {
    [&out.stderr, &out.stdout]
        .into_iter()
        .map(|bytes| String::from_utf8_lossy(bytes).trim().to_owned())
        .find(|text| !text.is_empty())
        .and_then(|text| text.lines().next().map(str::to_owned))
        .unwrap_or_else(|| out.status.to_string())
}

/// Runs a command with its output shown, under a guard; fails naming `line` if it fails.
fn run_shown(line: &str, cmd: Command) -> anyhow::Result<()> {
    let status = ChildGuard::spawn(line, cmd)?
        .wait()
        .with_context(|| format!("waiting for `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Where the runs are planned from: the tools, the workspace, the user's `MIRIFLAGS`.
struct Setting {
    tools: Tools,
    root: PathBuf,
    user_flags: Option<OsString>,
}

impl Setting {
    fn from_env() -> Self {
        Self {
            tools: Tools::from_path(),
            root: crate::project_root(),
            user_flags: std::env::var_os("MIRIFLAGS"),
        }
    }
}

/// The steps: every run of [`RUNS`] under both models, with the user's `MIRIFLAGS` kept in
/// front of each run's own. A run whose integration test does not exist yet runs its lib tests
/// only, with a note that says so.
fn plan_steps(setting: &Setting, opts: &Options) -> (Vec<Step>, Vec<String>) {
    let mut steps = Vec::new();
    let mut notes = Vec::new();
    for run in &RUNS {
        let mut args = vec!["test", "-p", run.krate, "--lib"];
        if let Some(test) = run.test {
            let file = format!("{}/tests/{test}.rs", run.krate);
            if setting.root.join(&file).is_file() {
                args.extend(["--test", test]);
            } else {
                notes.push(format!(
                    "Miri: {file} does not exist yet: ran {}'s lib tests only",
                    run.krate
                ));
            }
        }
        if opts.no_fail_fast {
            args.push("--no-fail-fast");
        }
        args.extend(run.filter);
        for (model, model_flags) in MODELS {
            let flags: Vec<&str> = run.flags.iter().chain(model_flags).copied().collect();
            let miriflags = steps::append_flags(setting.user_flags.clone(), &flags);
            steps.push(
                setting
                    .tools
                    .miri_step(format!("miri {} ({model})", run.label), &args)
                    .env("MIRIFLAGS", miriflags)
                    .counts_tests(Runner::Libtest)
                    .requires_tests(),
            );
        }
    }
    (steps, notes)
}

/// The name of the step that stands for all the Miri runs when Miri cannot run.
const UNAVAILABLE_STEP: &str = "miri (Stacked and Tree Borrows)";

/// The steps and summary notes `test-all` (`required == false`) or `ci` (`required == true`)
/// runs for Miri, given what [`prepare`] found: the runs when Miri is ready. Else, for
/// `test-all`, one skipped step and a note saying why (and a warning printed now); for `ci`, one
/// step that fails for that reason.
pub fn steps_for(
    prepared: anyhow::Result<Ready>,
    required: bool,
    opts: &Options,
) -> (Vec<Step>, Vec<String>) {
    steps_in(&Setting::from_env(), prepared, required, opts)
}

fn steps_in(
    setting: &Setting,
    prepared: anyhow::Result<Ready>,
    required: bool,
    opts: &Options,
) -> (Vec<Step>, Vec<String>) {
    let err = match prepared {
        Ok(ready) => {
            let (steps, mut notes) = plan_steps(setting, opts);
            notes.insert(0, ready.note);
            return (steps, notes);
        }
        Err(err) => err,
    };
    let why = format!("{err:#}");
    let step = setting
        .tools
        .miri_step(UNAVAILABLE_STEP.to_owned(), &["test"]);
    if required {
        (
            vec![step.fail(format!("Miri cannot run: {why}"))],
            Vec::new(),
        )
    } else {
        eprintln!("xtask: WARNING: Miri will NOT run (its step is skipped): {why}");
        (
            vec![step.skip(format!("NOT RUN: {why}"))],
            vec![format!("Miri NOT run, its step skipped: {why}")],
        )
    }
}

/// Runs `cargo xtask miri`: fails at once when Miri cannot be made ready.
pub fn run(opts: &Options) -> anyhow::Result<()> {
    let setting = Setting::from_env();
    let ready = prepare(&setting.tools).context("Miri cannot run")?;
    let mut env = Env::default();
    env.notes.push(ready.note);
    let (steps, notes) = plan_steps(&setting, opts);
    env.notes.extend(notes);
    test_all::run_plan(
        "miri",
        Plan {
            env,
            steps,
            scratch: Vec::new(),
        },
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::path::Path;

    use super::*;
    use crate::steps::Status;

    /// An executable `sh` script at `dir/name` that appends its arguments and its
    /// `RUSTUP_AUTO_INSTALL` to `dir/calls`, then runs `body`.
    fn fake(dir: &Path, name: &str, body: &str) -> OsString {
        let path = dir.join(name);
        let calls = dir.join("calls");
        let script = format!(
            "#!/bin/sh\necho \"{name} $* auto=$RUSTUP_AUTO_INSTALL\" >> '{}'\n{body}\n",
            calls.display()
        );
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o755)
            .open(&path)
            .unwrap();
        file.write_all(script.as_bytes()).unwrap();
        // Closed before anything executes it (an open writer makes exec fail with ETXTBSY).
        drop(file);
        path.into()
    }

    fn calls(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("calls")).unwrap_or_default()
    }

    /// A rustup with a nightly toolchain that has `installed` (one component a line), and whose
    /// `component add` exits with `add_status`.
    fn rustup_with(dir: &Path, installed: &str, add_status: u8) -> OsString {
        let body = format!(
            "case \"$1 $2\" in\n\
             'run nightly') echo 'rustc 1.97.0-nightly (fake 2026-05-19)' ;;\n\
             'component list') printf '{installed}' ;;\n\
             'component add') echo 'error: could not download' >&2; exit {add_status} ;;\n\
             *) exit 9 ;;\n\
             esac"
        );
        fake(dir, "rustup", &body)
    }

    #[test]
    fn components_are_found_with_or_without_a_target() {
        let all = "cargo-x86_64-unknown-linux-gnu\nmiri-x86_64-unknown-linux-gnu\nrust-src\n";
        assert!(missing_components(all).is_empty());
        assert_eq!(missing_components("rust-src\n"), ["miri"]);
        assert_eq!(
            missing_components("miris\nrust-srcs\n"),
            ["miri", "rust-src"],
            "only whole names, or a name and its target, count"
        );
        assert_eq!(missing_components(""), ["miri", "rust-src"]);
    }

    #[test]
    fn no_rustup_or_no_nightly_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let tools = Tools {
            rustup: dir.path().join("no-such-rustup").into(),
            cargo: "cargo".into(),
        };
        let err = format!("{:#}", prepare(&tools).unwrap_err());
        assert!(err.contains("cannot run rustup"), "{err}");

        let tools = Tools {
            rustup: fake(
                dir.path(),
                "rustup",
                "echo \"error: toolchain 'nightly' is not installed\" >&2; exit 1",
            ),
            cargo: "cargo".into(),
        };
        let err = format!("{:#}", prepare(&tools).unwrap_err());
        assert!(err.contains("no nightly toolchain"), "{err}");
        assert!(
            err.contains("toolchain 'nightly' is not installed"),
            "{err}"
        );
        // Asked without leave to install a toolchain.
        assert_eq!(
            calls(dir.path()),
            "rustup run nightly rustc --version auto=0\n"
        );
    }

    #[test]
    fn missing_components_are_installed_and_a_failed_install_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let tools = Tools {
            rustup: rustup_with(dir.path(), "rust-src\\n", 1),
            cargo: fake(dir.path(), "cargo", "exit 0"),
        };
        let err = format!("{:#}", prepare(&tools).unwrap_err());
        assert!(
            err.contains("`rustup component add --toolchain nightly miri` failed"),
            "{err}"
        );
        assert!(
            !calls(dir.path()).contains("cargo"),
            "no setup after a failed install"
        );

        let dir = tempfile::tempdir().unwrap();
        let tools = Tools {
            rustup: rustup_with(dir.path(), "", 0),
            cargo: fake(
                dir.path(),
                "cargo",
                "[ \"$*\" = '+nightly miri setup' ] || exit 1",
            ),
        };
        let ready = prepare(&tools).unwrap();
        assert!(
            ready
                .note
                .contains("rustc 1.97.0-nightly (fake 2026-05-19)"),
            "{}",
            ready.note
        );
        assert!(
            ready.note.contains("installed miri, rust-src"),
            "{}",
            ready.note
        );
        let calls = calls(dir.path());
        assert!(
            calls.ends_with(
                "rustup component add --toolchain nightly miri rust-src auto=0\n\
                 cargo +nightly miri setup auto=0\n"
            ),
            "{calls}"
        );
    }

    #[test]
    fn a_failed_setup_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let installed = "miri-x86_64-unknown-linux-gnu\\nrust-src\\n";
        let tools = Tools {
            rustup: rustup_with(dir.path(), installed, 0),
            cargo: fake(dir.path(), "cargo", "exit 101"),
        };
        let err = format!("{:#}", prepare(&tools).unwrap_err());
        assert!(err.contains("`cargo +nightly miri setup` failed"), "{err}");
        assert!(
            !calls(dir.path()).contains("component add"),
            "nothing to install"
        );
    }

    fn setting(root: &Path, user_flags: Option<&str>) -> Setting {
        Setting {
            tools: Tools {
                rustup: "rustup".into(),
                cargo: "cargo".into(),
            },
            root: root.to_owned(),
            user_flags: user_flags.map(OsString::from),
        }
    }

    fn var<'a>(step: &'a Step, key: &str) -> Option<&'a OsStr> {
        step.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_os_str())
    }

    #[test]
    fn every_run_under_both_models_with_the_users_flags_kept() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("pagecache/tests")).unwrap();
        std::fs::write(root.path().join("pagecache/tests/miri.rs"), "").unwrap();
        let opts = Options {
            no_fail_fast: true,
            ..Options::default()
        };
        let (steps, notes) = plan_steps(&setting(root.path(), Some("-Zmiri-seed=7")), &opts);

        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "miri pagecache (Stacked Borrows)",
                "miri pagecache (Tree Borrows)",
                "miri blockcache (Stacked Borrows)",
                "miri blockcache (Tree Borrows)",
                "miri segcache map (Stacked Borrows)",
                "miri segcache map (Tree Borrows)",
            ]
        );
        let line = |i: usize| {
            let step: &Step = &steps[i];
            let args: Vec<String> = step
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            (
                format!("{} {}", step.program.to_string_lossy(), args.join(" ")),
                var(step, "MIRIFLAGS")
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        assert_eq!(
            line(0),
            (
                "cargo +nightly miri test -p pagecache --lib --test miri --no-fail-fast".into(),
                "-Zmiri-seed=7".into()
            )
        );
        assert_eq!(
            line(1).1,
            "-Zmiri-seed=7 -Zmiri-tree-borrows",
            "the user's flags come first"
        );
        // No tests/miri.rs in blockcache (here): its lib tests only, said in a note.
        assert_eq!(
            line(2).0,
            "cargo +nightly miri test -p blockcache --lib --no-fail-fast"
        );
        assert_eq!(
            notes,
            ["Miri: blockcache/tests/miri.rs does not exist yet: ran blockcache's lib tests only"]
        );
        assert_eq!(
            line(5),
            (
                "cargo +nightly miri test -p segcache --lib --no-fail-fast map::tests::".into(),
                "-Zmiri-seed=7 -Zmiri-disable-isolation -Zmiri-tree-borrows".into()
            )
        );
        for step in &steps {
            assert_eq!(step.counts, Some(Runner::Libtest));
            assert!(step.requires_tests, "{}: a run of no test fails", step.name);
            assert_eq!(var(step, "RUSTUP_AUTO_INSTALL"), Some(OsStr::new("0")));
        }

        let (steps, _) = plan_steps(&setting(root.path(), None), &Options::default());
        assert_eq!(line_of(&steps[0]), "test -p pagecache --lib --test miri");
        assert_eq!(var(&steps[0], "MIRIFLAGS"), Some(OsStr::new("")));
        assert_eq!(
            var(&steps[5], "MIRIFLAGS"),
            Some(OsStr::new("-Zmiri-disable-isolation -Zmiri-tree-borrows"))
        );
    }

    /// A step's arguments after `+nightly miri`.
    fn line_of(step: &Step) -> String {
        let args: Vec<String> = step.args[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        args.join(" ")
    }

    #[test]
    fn test_all_skips_loudly_and_ci_fails_when_miri_cannot_run() {
        let root = tempfile::tempdir().unwrap();
        let mut setting = setting(root.path(), None);
        // Were a step run, this would fail to start, not quietly pass.
        setting.tools.cargo = root.path().join("no-such-cargo").into();
        let why = || Err(anyhow::anyhow!("no nightly toolchain"));
        let opts = Options::default();

        let (steps, notes) = steps_in(&setting, why(), false, &opts);
        assert_eq!(steps.len(), 1);
        assert_eq!(
            steps[0].skip.as_deref(),
            Some("NOT RUN: no nightly toolchain")
        );
        assert_eq!(
            notes,
            ["Miri NOT run, its step skipped: no nightly toolchain"]
        );
        let report = steps::run(&steps, &mut Env::default());
        assert!(report.success());
        assert!(matches!(report.outcomes[0].status, Status::Skipped(_)));

        let (steps, notes) = steps_in(&setting, why(), true, &opts);
        assert!(notes.is_empty());
        let report = steps::run(&steps, &mut Env::default());
        assert!(!report.success());
        match &report.outcomes[0].status {
            Status::Failed(why) => assert_eq!(why, "Miri cannot run: no nightly toolchain"),
            other => panic!("expected a failed step, got {other:?}"),
        }

        let ready = Ok(Ready {
            note: "Miri: ready".into(),
        });
        let (steps, notes) = steps_in(&setting, ready, true, &opts);
        assert_eq!(steps.len(), 6);
        assert_eq!(notes[0], "Miri: ready");
    }
}
