//! Child processes owned by a guard, so none outlives xtask.
//!
//! How each exit path stops a child started through [`ChildGuard::spawn`]:
//! - normal return, `?` and panics (xtask unwinds): the guard's `Drop` sends SIGTERM, waits a
//!   grace period, then SIGKILLs and reaps the child;
//! - Ctrl-C in a terminal: the terminal sends SIGINT to the whole foreground process group —
//!   cargo, xtask and every child xtask started (they stay in that group) — so each child gets the
//!   same SIGINT that ends xtask;
//! - xtask killed on its own (`kill <pid>`, even SIGKILL): each child was started with
//!   `PR_SET_PDEATHSIG = SIGTERM`, so the kernel sends it SIGTERM when xtask dies.
//!
//! A child started with a parent-death signal gets it when the *thread* that spawned it exits, so
//! spawn guarded children from a thread that lives as long as they should (here: the main
//! thread).

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context as _;

/// How long a child gets to exit after SIGTERM before it is killed.
const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// Owns a child process and stops it when dropped (see the module docs for every exit path).
///
/// Servers started for tests live in a guard for as long as the tests run; commands that xtask
/// waits for (cargo steps) are guarded too, so an interrupted xtask leaves nothing running.
#[derive(Debug)]
pub struct ChildGuard {
    name: String,
    child: Child,
    grace: Duration,
    /// Set once the child has been reaped; `Drop` then has nothing to do.
    reaped: bool,
}

impl ChildGuard {
    /// Spawns `cmd` under a guard named `name` (used in messages).
    pub fn spawn(name: impl Into<String>, mut cmd: Command) -> anyhow::Result<Self> {
        Self::spawn_mut(name, &mut cmd)
    }

    /// [`spawn`](Self::spawn) for a command built in place (`Command::new(..).arg(..)`).
    pub fn spawn_mut(name: impl Into<String>, cmd: &mut Command) -> anyhow::Result<Self> {
        let name = name.into();
        set_parent_death_signal(cmd);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", cmd.get_program().display()))?;
        Ok(Self {
            name,
            child,
            grace: DEFAULT_GRACE,
            reaped: false,
        })
    }

    /// Sets how long [`stop`](Self::stop) waits after SIGTERM before SIGKILL.
    #[expect(
        dead_code,
        reason = "for servers that need longer to stop (S3 server step)"
    )]
    #[must_use]
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child, e.g. to take its stdout pipe.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The guard's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the child to exit on its own.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait()?;
        self.reaped = true;
        Ok(status)
    }

    /// Whether the child is still running (a server that died early is an error worth saying).
    pub fn is_running(&mut self) -> io::Result<bool> {
        if self.reaped {
            return Ok(false);
        }
        match self.child.try_wait()? {
            Some(_) => {
                self.reaped = true;
                Ok(false)
            }
            None => Ok(true),
        }
    }

    /// Stops the child: SIGTERM, up to the grace period to exit, then SIGKILL. Returns how it
    /// exited, or `None` if it had already been reaped.
    pub fn stop(&mut self) -> io::Result<Option<ExitStatus>> {
        if self.reaped {
            return Ok(None);
        }
        if let Some(status) = self.child.try_wait()? {
            self.reaped = true;
            return Ok(Some(status));
        }
        // The child may exit between `try_wait` and the signal; then the signal fails with ESRCH
        // (the pid is not reused before we reap it), which is fine.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + self.grace;
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.reaped = true;
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                self.child.kill()?;
                let status = self.child.wait()?;
                self.reaped = true;
                return Ok(Some(status));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Err(err) = self.stop() {
            eprintln!("xtask: could not stop {}: {err}", self.name);
        }
    }
}

/// Makes the kernel send SIGTERM to the child when xtask dies, however it dies.
#[cfg(target_os = "linux")]
fn set_parent_death_signal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt as _;

    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before `exec`. It makes two raw system calls
    // (`prctl`, `getppid`) and builds an `io::Error` from an errno, which does not allocate: no
    // locks, no allocation, nothing that is unsafe between `fork` and `exec`.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))?;
            // xtask may have died between `fork` and `prctl`; the signal would never come.
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}

/// Other systems have no parent-death signal; the drop guard and the process group remain.
#[cfg(not(target_os = "linux"))]
fn set_parent_death_signal(_cmd: &mut Command) {}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    fn sleeper() -> Command {
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        cmd
    }

    #[test]
    fn stop_terminates_a_running_child() {
        let mut guard = ChildGuard::spawn("sleep", sleeper()).unwrap();
        assert!(guard.is_running().unwrap());
        let start = Instant::now();
        let status = guard.stop().unwrap().expect("first stop reaps the child");
        assert_eq!(
            status.signal(),
            Some(rustix::process::Signal::TERM.as_raw())
        );
        assert!(start.elapsed() < DEFAULT_GRACE, "SIGTERM was enough");
        assert!(!guard.is_running().unwrap());
        assert_eq!(guard.stop().unwrap(), None, "nothing left to stop");
    }

    #[test]
    fn drop_stops_the_child() {
        let guard = ChildGuard::spawn("sleep", sleeper()).unwrap();
        let pid = rustix::process::Pid::from_child(&guard.child);
        drop(guard);
        // Reaped by the drop: the pid no longer names our child (ESRCH), barring reuse.
        assert!(rustix::process::test_kill_process(pid).is_err());
    }

    #[test]
    fn a_child_that_exits_is_reaped_by_wait() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "exit 3"]);
        let mut guard = ChildGuard::spawn("sh", cmd).unwrap();
        assert_eq!(guard.wait().unwrap().code(), Some(3));
        assert_eq!(guard.stop().unwrap(), None);
    }

    #[test]
    fn a_missing_program_is_an_error_naming_it() {
        let err =
            ChildGuard::spawn("nothing", Command::new("/nonexistent/xtask-test")).unwrap_err();
        assert!(
            format!("{err:#}").contains("cannot start nothing"),
            "{err:#}"
        );
    }
}
