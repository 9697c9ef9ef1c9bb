//! What a run tells a person while it works, on stderr (stdout holds the report). On a terminal:
//! indicatif bars, one per stage for its rows validated and copied (count, rate, time), one for
//! the bytes being downloaded (rate and ETA), one for a set's files, with a line above them per
//! step; elsewhere nothing unless `-v` asks for a timestamped line per step; `--quiet` nothing.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress reporting for one run.
pub struct Progress {
    /// The bars, on a terminal (not quiet).
    bars: Option<MultiProgress>,
    quiet: bool,
    verbose: bool,
    started: Instant,
    /// Each stage's rows bar, while it stages rows.
    stages: Mutex<HashMap<String, ProgressBar>>,
}

/// A bar counting up (bytes downloaded, files fetched); nothing off a terminal.
#[derive(Clone, Default)]
pub struct Meter(Option<ProgressBar>);

impl Meter {
    /// `n` more done.
    pub fn add(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }

    /// Done: the bar stays, at its end.
    pub fn finish(&self) {
        if let Some(b) = &self.0 {
            b.finish();
        }
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> ")
}

impl Progress {
    /// Bars on a terminal, log lines elsewhere (with `verbose`); `quiet` shows nothing (JSON
    /// output, the scheduler's runs).
    pub fn new(quiet: bool, verbose: bool) -> Progress {
        let live = !quiet && std::io::stderr().is_terminal();
        Progress {
            bars: live.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8))),
            quiet,
            verbose,
            started: Instant::now(),
            stages: Mutex::new(HashMap::new()),
        }
    }

    /// A step worth a line only with `--verbose` (batches, phases with their timings).
    pub fn detail(&self, stage: &str, what: &str) {
        if self.verbose {
            self.step(stage, what);
        }
    }

    /// A step finished: a line above the bars on a terminal, a log line with `-v`.
    pub fn step(&self, stage: &str, what: &str) {
        if self.quiet || !(self.bars.is_some() || self.verbose) {
            return;
        }
        let line = format!("[{:>6.1}s] {stage}: {what}", self.started.elapsed().as_secs_f64());
        match &self.bars {
            Some(bars) => {
                let _ = bars.println(line);
            }
            None => eprintln!("{line}"),
        }
    }

    /// Valid rows validated and copied so far by a stage (its bar, made on first call).
    pub fn rows(&self, stage: &str, staged: u64) {
        let Some(bars) = &self.bars else { return };
        let mut stages = self.stages.lock().unwrap_or_else(|e| e.into_inner());
        let bar = stages.entry(stage.to_string()).or_insert_with(|| {
            let bar = bars.add(ProgressBar::new_spinner());
            bar.set_style(style("{spinner} {prefix}: {human_pos} valid rows validated and copied · {per_sec:0} · {elapsed}"));
            bar.set_prefix(stage.to_string());
            bar.enable_steady_tick(Duration::from_millis(125));
            bar
        });
        bar.set_position(staged);
    }

    /// A stage's rows are all staged: its bar stays at its count and rate.
    pub fn staged(&self, stage: &str) {
        if let Some(bar) = self.stages.lock().unwrap_or_else(|e| e.into_inner()).remove(stage) {
            bar.set_style(style("✓ {prefix}: {human_pos} valid rows validated and copied · {per_sec:0} · {elapsed}"));
            bar.finish();
        }
    }

    /// A bar for `total` bytes a stage downloads (rate, ETA).
    pub fn download(&self, stage: &str, total: u64) -> Meter {
        let Some(bars) = &self.bars else { return Meter(None) };
        let bar = bars.add(ProgressBar::new(total));
        bar.set_style(style("{prefix}: download [{bar:30}] {bytes}/{total_bytes} · {bytes_per_sec} · ETA {eta}"));
        bar.set_prefix(stage.to_string());
        Meter(Some(bar))
    }

    /// A bar for the `total` files of a stage's set fetched (ETA).
    pub fn files(&self, stage: &str, total: u64) -> Meter {
        let Some(bars) = &self.bars else { return Meter(None) };
        let bar = bars.add(ProgressBar::new(total));
        bar.set_style(style("{prefix}: files    [{bar:30}] {pos}/{len} · ETA {eta}"));
        bar.set_prefix(stage.to_string());
        Meter(Some(bar))
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
