//! What a run tells a person while it works, on stderr (stdout holds the report): on a terminal
//! one live line per stage (bytes fetched, rows validated, rows loaded) and a line per stage's
//! step; elsewhere nothing unless `-v` asks for a log line per step.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Progress reporting for one run.
pub struct Progress {
    live: bool,
    quiet: bool,
    verbose: bool,
    started: Instant,
    dirty: AtomicBool,
}

impl Progress {
    /// Live lines on a terminal, log lines elsewhere; `quiet` prints nothing (JSON output).
    pub fn new(quiet: bool, verbose: bool) -> Progress {
        Progress {
            live: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
            quiet,
            verbose,
            started: Instant::now(),
            dirty: AtomicBool::new(false),
        }
    }

    /// A step worth a line only with `--verbose` (batches, phases with their timings).
    pub fn detail(&self, stage: &str, what: &str) {
        if self.verbose {
            self.step(stage, what);
        }
    }

    /// A step finished: a log line on a terminal (replacing the live line) or with `-v`.
    pub fn step(&self, stage: &str, what: &str) {
        if self.quiet || !(self.live || self.verbose) {
            return;
        }
        let mut err = std::io::stderr().lock();
        if self.live && self.dirty.swap(false, Ordering::Relaxed) {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "[{:>6.1}s] {stage}: {what}", self.started.elapsed().as_secs_f64());
    }

    /// Valid rows staged so far (terminal only: a line rewritten in place).
    pub fn rows(&self, stage: &str, staged: u64) {
        if self.quiet || !self.live {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{stage}: {staged} valid rows validated and staged");
        let _ = err.flush();
        self.dirty.store(true, Ordering::Relaxed);
    }
}

/// Bytes in a person's units.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}
