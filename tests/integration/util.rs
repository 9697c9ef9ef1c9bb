//! Test helpers: run the real `etl` binary, compare with golden files, and print the whole
//! evidence (command, exit code, stdout, stderr) when something differs.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The project root (where Cargo.toml is).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What a finished command did.
pub struct Output {
    pub command: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Everything, for a failure message.
    pub fn evidence(&self) -> String {
        format!(
            "command: {}\nexit code: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n",
            self.command, self.code, self.stdout, self.stderr
        )
    }

    /// Asserts the exit code, printing the evidence otherwise.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, code, "unexpected exit code\n{}", self.evidence());
        self
    }
}

/// Runs `etl ARGS` from the project root with a clean environment (only PATH and HOME), plus
/// `env`.
pub fn etl(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_etl"));
    cmd.args(args).current_dir(root()).env_clear();
    for var in ["PATH", "HOME"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("NO_COLOR", "1");
    // Line indexes go to this test process's own cache, not the user's.
    cmd.env("ETL_CACHE_DIR", cache_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("the etl binary runs");
    Output {
        command: format!("etl {}", args.join(" ")),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The cache directory (line indexes) of the etl processes of this test run: its own, under
/// the system's temporary directory, so tests never read a user's or another run's. A test run
/// has no end to clean up at, so the first call removes the directories of earlier runs whose
/// process is gone (each kept tens of MB).
pub fn cache_dir() -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_finished_runs_caches);
    std::env::temp_dir().join(format!("etl-test-cache-{}", std::process::id()))
}

/// Removes `etl-test-cache-<pid>` directories whose process no longer runs (Linux's `/proc`
/// tells; elsewhere nothing is removed).
fn remove_finished_runs_caches() {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("etl-test-cache-")).and_then(|p| p.parse::<u32>().ok()) else { continue };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether golden files are to be rewritten: `UPDATE_GOLDEN=1` (any other value is a mistake,
/// and under CI, where a rewritten file would pass unseen, it is refused).
pub fn update_golden() -> bool {
    match std::env::var("UPDATE_GOLDEN").ok().as_deref() {
        None => false,
        Some("1") if std::env::var_os("CI").is_some() => panic!("UPDATE_GOLDEN=1 is refused under CI (CI is set): golden files are compared there, never rewritten"),
        Some("1") => true,
        Some(other) => panic!("UPDATE_GOLDEN={other}: set it to 1 to rewrite the golden files, or unset it"),
    }
}

/// Compares `actual` with the golden file at `path` (relative to the root). With
/// UPDATE_GOLDEN=1 the file is rewritten instead; review the diff before committing.
pub fn golden(path: &str, actual: &str, evidence: &str) {
    let full = root().join(path);
    if update_golden() {
        std::fs::create_dir_all(full.parent().expect("golden files live in a folder")).unwrap();
        std::fs::write(&full, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&full)
        .unwrap_or_else(|_| panic!("golden file {path} is missing; run with UPDATE_GOLDEN=1 to create it\n{evidence}"));
    if expected != actual {
        panic!(
            "output differs from golden file {path} (UPDATE_GOLDEN=1 rewrites it)\n--- expected ---\n{expected}\n--- actual ---\n{actual}\n{evidence}"
        );
    }
}

/// Files in a folder with an extension, sorted.
pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// The start of a test's spec: its name, a local connection `files` at `dir`, a PostgreSQL
/// connection `db` (the test database, schema `$SCHEMA`); the stages follow.
pub fn spec_head(name: &str, dir: impl std::fmt::Display) -> String {
    format!(
        "version: 1\nname: {name}\nconnections:\n  files: {{ type: local, path: '{dir}' }}\n  db: {{ type: postgres, url: \"{{{{ env.ETL_TEST_DATABASE_URL }}}}\", schema: \"{{{{ env.SCHEMA }}}}\" }}\n"
    )
}
