//! Progress of a long run: a bar when a person watches a terminal, plain log lines otherwise.
//!
//! Jobs report through the [`Progress`] trait and never know which one they hold; the
//! scheduler passes [`NoProgress`], `jobs run` passes [`console_progress`].

use crate::clock::SharedClock;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// Receives the progress of one phase of a run.
pub trait Progress: Send + Sync {
    /// A phase named `label` begins with `total` items to do.
    fn start(&self, label: &str, total: u64);
    /// `n` more items are done.
    fn inc(&self, n: u64);
    /// The phase is over.
    fn finish(&self);
}

/// Reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _label: &str, _total: u64) {}
    fn inc(&self, _n: u64) {}
    fn finish(&self) {}
}

/// A bar on stderr when it is a terminal, else log lines at most every 5 seconds of `clock`.
pub(crate) fn console_progress(clock: SharedClock) -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        Box::new(BarProgress(Mutex::new(None)))
    } else {
        Box::new(LogProgress {
            state: Mutex::new(LogState::default()),
            clock,
        })
    }
}

struct BarProgress(Mutex<Option<ProgressBar>>);

impl Progress for BarProgress {
    fn start(&self, label: &str, total: u64) {
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_string());
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }
    fn inc(&self, n: u64) {
        if let Some(b) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            b.inc(n);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish();
        }
    }
}

#[derive(Default)]
struct LogState {
    label: String,
    total: u64,
    done: u64,
    last: Duration,
}

struct LogProgress {
    state: Mutex<LogState>,
    clock: SharedClock,
}

impl Progress for LogProgress {
    fn start(&self, label: &str, total: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        *s = LogState {
            label: label.to_string(),
            total,
            done: 0,
            last: self.clock.monotonic(),
        };
        tracing::info!("{label}: {total} to do");
    }
    fn inc(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.done += n;
        let now = self.clock.monotonic();
        if now.saturating_sub(s.last) >= Duration::from_secs(5) {
            s.last = now;
            tracing::info!("{}: {}/{} done", s.label, s.done, s.total);
        }
    }
    fn finish(&self) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        tracing::info!("{}: {}/{} done", s.label, s.done, s.total);
    }
}
