//! The run's temporary directory (the downloads' spools, DuckDB's spill and census, scratch
//! files): made as the run starts, removed as it ends; and those of runs killed before they could
//! remove theirs (SIGKILL, the OOM killer, a crash), removed by the next run.

use std::fs::File;
use std::path::Path;

use super::error::CliError;

/// The names of the runs' directories under the system's temporary directory.
const PREFIX: &str = "etl-run-";
/// The file each run's directory holds locked while the run lives. The lock goes with its
/// process however that ends, and holds across processes and containers sharing the directory.
const LOCK: &str = ".etl-run.lock";

/// A run's temporary directory, locked; removed when dropped.
pub struct RunDir {
    // Closed before the directory is removed (Windows removes no open file).
    _lock: File,
    dir: tempfile::TempDir,
}

impl RunDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// What [`run_dir`] removed of runs that ended without removing their directories.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub dirs: usize,
    pub bytes: u64,
}

/// Makes the run's directory under the system's temporary directory (`TMPDIR`), locked, after
/// removing those left by runs that ended without removing theirs.
pub fn run_dir() -> Result<(RunDir, Swept), CliError> {
    let parent = std::env::temp_dir();
    let swept = sweep(&parent);
    let fail = |e: std::io::Error| CliError::System { what: format!("create a temporary directory in {}", parent.display()), message: e.to_string() };
    let dir = tempfile::Builder::new().prefix(PREFIX).tempdir_in(&parent).map_err(fail)?;
    // Locked under another name, then renamed: a run sweeping meanwhile never finds this
    // directory's lock file unlocked (a directory without one is left alone).
    let starting = dir.path().join(".etl-run.lock.new");
    let lock = File::create(&starting).map_err(fail)?;
    lock.lock().map_err(fail)?;
    std::fs::rename(&starting, dir.path().join(LOCK)).map_err(fail)?;
    Ok((RunDir { _lock: lock, dir }, swept))
}

/// Removes each `etl-run-*` directory under `parent` whose lock file this process can lock: its
/// run has ended without removing it. Left: directories whose run lives (locked), those without
/// a lock file (a run making its directory now, or one of an etl older than the lock, whose
/// owner cannot be told), and those this user may not remove.
fn sweep(parent: &Path) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(parent) else { return swept };
    for entry in entries.flatten() {
        if !entry.file_name().to_str().is_some_and(|n| n.starts_with(PREFIX)) {
            continue;
        }
        let dir = entry.path();
        let Ok(lock) = File::open(dir.join(LOCK)) else { continue };
        if lock.try_lock().is_err() {
            continue;
        }
        let bytes = size(&dir);
        if std::fs::remove_dir_all(&dir).is_ok() {
            swept.dirs += 1;
            swept.bytes += bytes;
        }
    }
    swept
}

/// The bytes of the files under `dir`.
fn size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => size(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory as a run leaves it: its lock file, and a spool.
    fn left(parent: &Path, name: &str) -> std::path::PathBuf {
        let dir = parent.join(name);
        std::fs::create_dir_all(dir.join("spool")).unwrap();
        std::fs::write(dir.join(LOCK), "").unwrap();
        std::fs::write(dir.join("spool/trades.csv"), "x".repeat(1000)).unwrap();
        dir
    }

    #[test]
    fn only_the_directories_of_runs_that_ended_are_removed() {
        let parent = tempfile::tempdir().unwrap();
        let ended = left(parent.path(), "etl-run-ended");
        let living = left(parent.path(), "etl-run-living");
        let held = File::open(living.join(LOCK)).unwrap();
        held.lock().unwrap();
        // Being made (no lock file yet), and not a run's.
        let unlocked = parent.path().join("etl-run-starting");
        std::fs::create_dir(&unlocked).unwrap();
        let other = left(parent.path(), "other-ended");
        assert_eq!(sweep(parent.path()), Swept { dirs: 1, bytes: 1000 });
        assert!(!ended.exists());
        assert!(living.exists() && unlocked.exists() && other.exists());
        drop(held);
        assert_eq!(sweep(parent.path()), Swept { dirs: 1, bytes: 1000 }, "the living run ended");
        assert!(!living.exists());
    }
}
