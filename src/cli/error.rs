//! What the command line can fail at, each with its fix and its exit code, rendered once at the
//! top (`cli::run`): a spec that does not load, a flag or stage that does not fit the spec, a job
//! that does not exist, and whatever the executor reports.

use crate::exec::ExecError;
use crate::exit;
use crate::spec::SpecError;

/// Why a command failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[non_exhaustive]
pub enum CliError {
    /// The spec could not be loaded (its problems, placed in its text).
    #[error(transparent)]
    #[diagnostic(transparent)]
    Spec(Box<SpecError>),
    /// A stage named on the command line is not in the spec.
    #[error("spec {spec} has no stage `{stage}` (stages: {stages})")]
    #[diagnostic(code(cli::unknown_stage), help("{hint}"))]
    UnknownStage {
        /// The spec file.
        spec: String,
        /// The stage asked for.
        stage: String,
        /// The spec's stages.
        stages: String,
        /// The nearest name, or how to see them.
        hint: String,
    },
    /// A flag's value cannot be used.
    #[error("{flag}: {problem}")]
    #[diagnostic(code(cli::flag), help("{fix}"))]
    Flag {
        /// The flag and its value.
        flag: String,
        /// What is wrong.
        problem: String,
        /// How to write it.
        fix: String,
    },
    /// `etl schedule` needs a PostgreSQL connection to keep its jobs in.
    #[error("spec {spec} has no PostgreSQL connection to keep the jobs in")]
    #[diagnostic(code(cli::no_job_store), help("add a postgres connection to the spec, or point --spec at a spec that has one"))]
    NoJobStore {
        /// The spec file.
        spec: String,
    },
    /// No job has that id.
    #[error("no job `{id}`")]
    #[diagnostic(code(cli::unknown_job), help("`etl schedule list` shows the jobs"))]
    UnknownJob {
        /// The id asked for.
        id: String,
    },
    /// The run failed.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Exec(#[from] ExecError),
    /// The machine refused something the command needs (a temporary directory, a file, a
    /// runtime).
    #[error("cannot {what}: {message}")]
    #[diagnostic(code(cli::system), help("check that the directory exists, that etl may write there, and that the disk has room"))]
    System {
        /// What was attempted.
        what: String,
        /// Why.
        message: String,
    },
}

impl From<SpecError> for CliError {
    fn from(e: SpecError) -> CliError {
        CliError::Spec(Box::new(e))
    }
}

impl CliError {
    /// A flag's value that cannot be used.
    pub fn flag(flag: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> CliError {
        CliError::Flag { flag: flag.into(), problem: problem.into(), fix: fix.into() }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Spec(_) | CliError::UnknownStage { .. } | CliError::Flag { .. } | CliError::NoJobStore { .. } | CliError::UnknownJob { .. } => exit::USAGE,
            CliError::Exec(e) => e.exit_code(),
            CliError::System { .. } => exit::ERROR,
        }
    }

    /// The error as a person sees it: a spec's problems placed in its text, anything else as a
    /// diagnostic with its help line.
    pub fn render(&self, color: bool) -> String {
        if let CliError::Spec(e) = self {
            return e.render(color);
        }
        let mut out = String::new();
        let theme = if color { miette::GraphicalTheme::unicode() } else { miette::GraphicalTheme::unicode_nocolor() };
        let _ = miette::GraphicalReportHandler::new_themed(theme).render_report(&mut out, self);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One error of each kind the command line adds, as a person sees it: every one has a help
    /// line (the reviewed golden file; UPDATE_GOLDEN=1 rewrites it).
    #[test]
    fn every_command_line_error_renders_a_help_line() {
        let errors = [
            CliError::UnknownStage { spec: "specs/small_etl.yaml".into(), stage: "trade".into(), stages: "assets, trades".into(), hint: "did you mean `trades`?".into() },
            CliError::flag("--source trades", "write STAGE=KEY", "e.g. --source trades=trades_2025.csv"),
            CliError::NoJobStore { spec: "examples/quickstart.yaml".into() },
            CliError::UnknownJob { id: "nightly".into() },
            CliError::System { what: "write rejects.csv".into(), message: "Permission denied".into() },
        ];
        let mut all = String::new();
        for e in &errors {
            let out = e.render(false);
            assert!(out.contains("help:"), "no help line:\n{out}");
            all.push_str(&out);
            all.push_str(&format!("exit code {}\n\n", e.exit_code()));
        }
        crate::golden::check("tests/golden/errors/cli.txt", &all);
    }
}
