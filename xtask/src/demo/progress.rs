//! A hand-written progress bar for the demo's long steps, drawn on stderr.
//!
//! The bar is drawn only when stderr is a terminal: `\r  writing blocks [#####.....]  52%`,
//! redrawn in place whenever the whole percentage changes, and wiped when the step ends (the
//! step then prints its own line on stdout). When stderr is a file or a pipe nothing is drawn,
//! so logs stay clean.
//!
//! [`Progress`] is `Sync`: threads of one step may share it and count their work with
//! [`Progress::inc`].

use std::io::{IsTerminal as _, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};

/// Cells of the bar between the brackets.
const BAR_WIDTH: usize = 30;

/// A progress bar for one step of `total` units of work.
#[derive(Debug)]
pub struct Progress {
    label: String,
    total: u64,
    done: AtomicU64,
    /// Whether to draw at all (stderr is a terminal).
    live: bool,
    /// The percentage last drawn, `None` before the first draw. Guarded so that two threads
    /// never interleave their writes of the line; a thread that finds it taken skips drawing.
    drawn: Mutex<Option<u64>>,
}

impl Progress {
    /// A bar labelled `label` for `total` units, drawn if stderr is a terminal.
    pub fn new(label: impl Into<String>, total: u64) -> Self {
        Self::with_output(label, total, std::io::stderr().is_terminal())
    }

    /// A bar that draws only if `live`.
    fn with_output(label: impl Into<String>, total: u64, live: bool) -> Self {
        Self {
            label: label.into(),
            total,
            done: AtomicU64::new(0),
            live,
            drawn: Mutex::new(None),
        }
    }

    /// Counts `n` more units done, and redraws if the percentage changed.
    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        self.draw(done);
    }

    /// Sets the units done, and redraws if the percentage changed.
    pub fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.draw(done);
    }

    fn draw(&self, done: u64) {
        if !self.live {
            return;
        }
        let mut drawn = match self.drawn.try_lock() {
            Ok(guard) => guard,
            // The guarded value is only a redraw hint: a poisoned one is still good.
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        let pct = percent(done, self.total);
        if *drawn == Some(pct) {
            return;
        }
        *drawn = Some(pct);
        let mut err = std::io::stderr().lock();
        // A progress bar that cannot be drawn is not worth failing the demo for.
        let _ = write!(
            err,
            "\r{}",
            render(&self.label, done, self.total, BAR_WIDTH)
        );
        let _ = err.flush();
    }

    /// Wipes the bar (the step prints its own line next).
    pub fn finish(self) {
        drop(self);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let drawn = self.drawn.get_mut().unwrap_or_else(PoisonError::into_inner);
        if self.live && drawn.is_some() {
            let width = render(&self.label, self.total, self.total, BAR_WIDTH)
                .chars()
                .count();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{:width$}\r", "");
            let _ = err.flush();
        }
    }
}

/// The whole percentage of `done` out of `total`, at most 100; 100 when `total` is 0.
fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        (u128::from(done.min(total)) * 100 / u128::from(total)) as u64
    }
}

/// One frame of the bar, without the leading `\r`: `  label [####......]  40%`, with `width`
/// cells between the brackets.
pub fn render(label: &str, done: u64, total: u64, width: usize) -> String {
    let filled = if total == 0 {
        width
    } else {
        (u128::from(done.min(total)) * width as u128 / u128::from(total)) as usize
    };
    format!(
        "  {label} [{}{}] {:>3}%",
        "#".repeat(filled),
        ".".repeat(width - filled),
        percent(done, total)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bar_and_percentage() {
        assert_eq!(
            render("writing blocks", 52, 100, 20),
            "  writing blocks [##########..........]  52%"
        );
        assert_eq!(render("x", 0, 10, 4), "  x [....]   0%");
        assert_eq!(render("x", 10, 10, 4), "  x [####] 100%");
        // Past the end and empty steps show as complete.
        assert_eq!(render("x", 15, 10, 4), "  x [####] 100%");
        assert_eq!(render("x", 0, 0, 4), "  x [####] 100%");
        // Huge totals do not overflow.
        assert_eq!(render("x", u64::MAX / 2, u64::MAX, 4), "  x [#...]  49%");
    }

    #[test]
    fn counts_from_several_threads() {
        let progress = Progress::with_output("t", 1000, false);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..250 {
                        progress.inc(1);
                    }
                });
            }
        });
        assert_eq!(progress.done.load(Ordering::Relaxed), 1000);
        assert!(
            progress.drawn.lock().unwrap().is_none(),
            "not live: never drawn"
        );
    }
}
