//! The command line's clap definitions: every command, its flags and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Declarative batch ETL: CSV from S3 or local files, validated row by row, loaded into
/// PostgreSQL (or an embedded DuckDB file), driven by a YAML spec.
#[derive(Debug, Parser)]
#[command(name = "etl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
    /// When to colour diagnostics.
    #[arg(long, global = true, value_enum, default_value_t = Color::Auto)]
    pub color: Color,
}

/// When to colour output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Color {
    /// On a terminal, unless NO_COLOR is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check specs against the schema and the semantic rules; report every problem with its
    /// line and column. Exit 0 when all are valid, 2 otherwise. Needs no network.
    ValidateSpec {
        /// Spec files.
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<PathBuf>,
        /// Report format: text, or one JSON document (each spec, valid or not, with its problems:
        /// code, message, help, file, line, column).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        spec: SpecArgs,
    },
    /// Print every statement a run sends, in order: per stage its locks and table checks, the
    /// DuckDB SQL that reads and casts the CSV, the Polars row checks, the target DDL and load
    /// SQL; then analytics, schedules and run records. Offline.
    /// Takes every flag `etl run` takes, and shows the run they make. Secrets' unset variables
    /// are left unset.
    Plan(RunArgs),
    /// Run a spec: for each stage (in dependency order) extract the CSV, validate every row, load
    /// the valid ones, record the rejects; then run the analytics. Exit 0 when every row loaded,
    /// 4 when rows were rejected and the rest loaded, 5 when a stage's data was refused (over its
    /// error budget; an empty file for `replace`), 3 when S3 or the database cannot be reached.
    Run(RunArgs),
    /// Run a spec once per business date, oldest first: `--from` to `--to`, each date a run of
    /// its own (recorded in etl_runs with its date), as `etl run --date D` would. A date whose
    /// stages a finished run already loaded is skipped, so a backfill that stopped resumes where it
    /// stopped. Stops at the first date that fails (exit 3, 5, ...) unless --keep-going. Exit: the
    /// first failed date's code, else 4 when any date rejected rows, else 0.
    Backfill(BackfillArgs),
    /// Load files from the work queue of the spec's `etl run --distribute` runs, one claim at a
    /// time, each file in a transaction of its own, until stopped (or idle for
    /// --exit-when-idle). Any number of workers, on any machines, share a queue; a worker that
    /// dies loses its claim when its lease runs out and another loads the file.
    Worker(WorkerArgs),
    /// The seed's alias: `etl run --stage assets`.
    Assets(RunArgs),
    /// The seed's alias: `etl run --stage trades`.
    Trades(RunArgs),
    /// Empty the spec's target tables (asks first on a terminal; without one, needs --yes).
    Clean(CleanArgs),
    /// Apply the engine's migrations (etl_runs, etl_run_stages, etl_rejects, ...) to the spec's
    /// PostgreSQL target. `etl run` does this too.
    Migrate(MigrateArgs),
    /// Scheduled runs kept in PostgreSQL: add, list, pause, resume, remove, and start the
    /// scheduler.
    Schedule {
        /// What to do.
        #[command(subcommand)]
        action: ScheduleCmd,
    },
    /// The rejects the run records keep, with each rejected row's fields as read: list them,
    /// show them in full, or export a stage's rejected records as a CSV file to correct. By
    /// default each stage's rejects as its latest load left them.
    Rejects {
        /// What to do.
        #[command(subcommand)]
        action: RejectsAction,
    },
    /// Write a self-contained HTML page of a run from the run records: each stage's counts,
    /// rejects by rule and by column, contracts, files, and charts of the runs before it.
    Report(ReportArgs),
    /// Write a first spec for a CSV file from a sample of it: the dialect DuckDB finds, each
    /// column's type proposed conservatively (a code like `000051` stays text) with the evidence
    /// as a comment, headers mapped to column names; then show its plan.
    Init(InitArgs),
    /// Print the JSON schema of a spec (draft 2020-12).
    Schema {
        /// Print the spec reference in Markdown instead.
        #[arg(long)]
        markdown: bool,
    },
}

/// How to read a spec.
#[derive(Debug, Clone, Default, Args)]
pub struct SpecArgs {
    /// Environment overlay: merge configs/ENV.yaml over the spec (e.g. dev, test).
    #[arg(short = 'e', long = "env", value_name = "ENV")]
    pub env: Option<String>,
    /// Directory holding the ENV.yaml overlays [default: configs/ beside the spec's directory].
    #[arg(long, value_name = "DIR")]
    pub config_dir: Option<PathBuf>,
    /// Override any spec value, e.g. --set defaults.batch_size=5000 (the value is read as YAML).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
    /// The business date templates see as `run.date` [default: today in the spec's `timezone`].
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<chrono::NaiveDate>,
}

/// How to print a run's report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A summary table per stage, analytics as tables.
    Text,
    /// One JSON document.
    Json,
}

/// Options of `etl run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Spec file [default: $ETL_SPEC, then specs/small_etl.yaml].
    #[arg(value_name = "SPEC")]
    pub spec_path: Option<PathBuf>,
    /// Run only this stage (repeatable); its `needs` must already be loaded.
    #[arg(long = "stage", value_name = "STAGE")]
    pub stages: Vec<String>,
    /// Extract, validate and stage everything, then roll back: report what would load, write
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Load every stage, even one whose source, spec and tables are unchanged since its last
    /// load (which is otherwise skipped, its counts and rejects reported again).
    #[arg(long)]
    pub force: bool,
    /// Also write every reject (line, column, rule, value, message) to this CSV file; `-` for
    /// standard output (the report then goes to standard error). Checked before anything loads.
    #[arg(long, value_name = "FILE")]
    pub rejects_out: Option<PathBuf>,
    /// Also write the run's figures in Prometheus' text format to this file (for node_exporter's
    /// textfile collector; written whole, then renamed into place), also when the run fails.
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Report format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Rows per batch, for every stage.
    #[arg(short = 'b', long, value_name = "ROWS")]
    pub batch_size: Option<u32>,
    /// Print each step of each stage on stderr, with timings (on a terminal, a live line per
    /// stage is shown without it).
    #[arg(short = 'v', long, conflicts_with = "quiet")]
    pub verbose: bool,
    /// Print nothing but errors: no progress, no report (the exit code tells; --rejects-out is
    /// still written).
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Read STAGE from another object key or file: --source trades=trades_2025.csv.
    #[arg(long = "source", value_name = "STAGE=KEY")]
    pub sources: Vec<String>,
    /// The seed's flag: --source assets=KEY.
    #[arg(long, value_name = "KEY")]
    pub assets_file: Option<String>,
    /// The seed's flag: --source trades=KEY.
    #[arg(long, value_name = "KEY")]
    pub trades_file: Option<String>,
    /// S3 endpoint of every s3 connection.
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// Bucket of every s3 connection.
    #[arg(long, value_name = "BUCKET")]
    pub s3_bucket: Option<String>,
    /// Queue the files of each stage whose set commits file by file (`atomicity: file`) for
    /// `etl worker`s to load, load them beside the workers, and wait for every file of a stage
    /// before the stages after it; the report names the worker of each file.
    #[arg(long)]
    pub distribute: bool,
    /// How long a claim on a queued file holds unless renewed (its worker renews it every third
    /// of it): the files of a worker that died are claimed again after this.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub lease: std::time::Duration,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// Options of `etl worker`: who it is, when it stops, and every flag `etl run` takes (the
/// business date and the stage come with each file it claims).
#[derive(Debug, Clone, Args)]
pub struct WorkerArgs {
    /// The worker's name in the queue and its log [default: host:pid].
    #[arg(long, value_name = "NAME")]
    pub id: Option<String>,
    /// Exit once there has been nothing to claim for this long [default: wait until stopped].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub exit_when_idle: Option<std::time::Duration>,
    /// How often to look for a file when there is none.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll: std::time::Duration,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Options of `etl backfill`: the dates, and every flag `etl run` takes (but `--date`).
#[derive(Debug, Clone, Args)]
pub struct BackfillArgs {
    /// The first business date.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub from: chrono::NaiveDate,
    /// The last business date (inclusive).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub to: chrono::NaiveDate,
    /// Go on with the next date after one fails (the exit code still tells).
    #[arg(long)]
    pub keep_going: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The seed's database flags: they override every postgres connection of the spec.
#[derive(Debug, Clone, Default, Args)]
pub struct DbArgs {
    /// Host of every postgres connection.
    #[arg(long, value_name = "HOST")]
    pub db_host: Option<String>,
    /// Port of every postgres connection.
    #[arg(long, value_name = "PORT")]
    pub db_port: Option<u16>,
    /// Database of every postgres connection.
    #[arg(long, value_name = "NAME")]
    pub db_name: Option<String>,
    /// User of every postgres connection.
    #[arg(long, value_name = "USER")]
    pub db_user: Option<String>,
    /// Password of every postgres connection (prefer PGPASSWORD or ~/.pgpass: a flag's value
    /// shows in the process list).
    #[arg(long, value_name = "PASSWORD")]
    pub db_password: Option<String>,
}

impl Command {
    /// Whether the command was asked for JSON output (so an error is printed as JSON too).
    pub fn json_output(&self) -> bool {
        match self {
            Command::Run(a) | Command::Assets(a) | Command::Trades(a) | Command::Plan(a) => a.output == Output::Json,
            Command::Backfill(b) => b.run.output == Output::Json,
            Command::Rejects { action: RejectsAction::List(a) | RejectsAction::Show(a) | RejectsAction::Replay { select: a, .. } } => a.output == Output::Json,
            _ => false,
        }
    }
}

/// Options of `etl report`.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Spec file [default: $ETL_SPEC, then specs/small_etl.yaml].
    #[arg(value_name = "SPEC")]
    pub spec_path: Option<PathBuf>,
    /// The run to report [default: the spec's latest].
    #[arg(long, value_name = "N")]
    pub run: Option<i64>,
    /// Runs the charts over time show: the reported one and those before it.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub last: i64,
    /// Where to write the page [default: etl-report-SPEC.html; `-`: standard output].
    #[arg(short = 'o', long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// Options of `etl init`.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// The CSV file to sample: a path, or an S3 object `s3://BUCKET/KEY` (credentials from the
    /// environment or the standard AWS chain, never written into the spec).
    #[arg(long, value_name = "PATH|s3://BUCKET/KEY")]
    pub from: PathBuf,
    /// The S3-compatible server of an `s3://` sample (e.g. http://127.0.0.1:19000) [default:
    /// AWS S3].
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL")]
    pub s3_endpoint: Option<String>,
    /// How much of an `s3://` object to sample, from its start, in MiB (cut after its last whole
    /// line).
    #[arg(long, value_name = "MIB", default_value_t = 16)]
    pub sample_mib: u64,
    /// The spec's name [default: the table's].
    #[arg(long)]
    pub name: Option<String>,
    /// The target table (and stage) [default: from the file's name].
    #[arg(long)]
    pub table: Option<String>,
    /// The key columns (headers or column names) [default: a unique `id` column, else none: the
    /// rows are appended].
    #[arg(long = "key", value_name = "COLUMN")]
    pub key: Vec<String>,
    /// Where to write the spec [default: NAME.yaml].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Rows to sample.
    #[arg(long, default_value_t = 100_000)]
    pub sample_rows: u64,
    /// Write over an existing file.
    #[arg(long)]
    pub force: bool,
}

/// `etl rejects` actions.
#[derive(Debug, Clone, Subcommand)]
pub enum RejectsAction {
    /// One line per reject: stage, run, file, line, column, rule, value, message.
    List(RejectsArgs),
    /// Each reject in full, with its row's fields as read.
    Show(RejectsArgs),
    /// The rejected rows of one stage as a CSV file with the stage's headers (each row once), to
    /// correct and load again.
    Export {
        #[command(flatten)]
        select: RejectsArgs,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check one stage's rejected rows of its latest load again under the spec as it is now and
    /// load those that pass, in one transaction with their rejects marked replayed (the others
    /// stay rejected). For an upsert or append stage. Exit 0 when every row loaded, 4 when some
    /// are still rejected.
    Replay {
        #[command(flatten)]
        select: RejectsArgs,
        /// Load this corrected file instead (the CSV `export` writes, edited): each row that
        /// loads marks the rejected rows with its key replayed. Needs a stage with a key.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
    },
}

/// Which rejects `etl rejects` reads.
#[derive(Debug, Clone, Args)]
pub struct RejectsArgs {
    /// Spec file [default: $ETL_SPEC, then specs/small_etl.yaml].
    #[arg(value_name = "SPEC")]
    pub spec_path: Option<PathBuf>,
    /// The rejects of this run's stages (a stage it found unchanged: those of the load it reused)
    /// [default: each stage's latest load].
    #[arg(long, value_name = "N")]
    pub run: Option<i64>,
    /// Only this stage's.
    #[arg(long, value_name = "STAGE")]
    pub stage: Option<String>,
    /// Only this rule's (a facet such as `min`, `type`, `csv`, or a rule's name).
    #[arg(long, value_name = "RULE")]
    pub rule: Option<String>,
    /// Only those on this line.
    #[arg(long, value_name = "N")]
    pub line: Option<i64>,
    /// Report format (`list`, `show`).
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
}

impl RejectsArgs {
    /// The database flags as run options, to share their handling.
    pub fn as_run_args(&self) -> RunArgs {
        RunArgs::database_only(self.spec_path.clone(), self.stage.iter().cloned().collect(), self.db.clone(), self.spec.clone())
    }
}

/// Options of `etl clean` and `etl migrate`.
#[derive(Debug, Clone, Args)]
pub struct CleanArgs {
    /// Spec file [default: $ETL_SPEC, then specs/small_etl.yaml].
    #[arg(value_name = "SPEC")]
    pub spec_path: Option<PathBuf>,
    /// Only this stage's table (repeatable).
    #[arg(long = "stage", value_name = "STAGE")]
    pub stages: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
}

/// Options of `etl migrate`: a spec and its database flags.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Spec file [default: $ETL_SPEC, then specs/small_etl.yaml].
    #[arg(value_name = "SPEC")]
    pub spec_path: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
}

impl MigrateArgs {
    /// The database flags as run options, to share their handling.
    pub fn as_run_args(&self) -> RunArgs {
        RunArgs::database_only(self.spec_path.clone(), Vec::new(), self.db.clone(), self.spec.clone())
    }
}

impl CleanArgs {
    /// The database flags as run options, to share their handling.
    pub fn as_run_args(&self) -> RunArgs {
        RunArgs::database_only(self.spec_path.clone(), self.stages.clone(), self.db.clone(), self.spec.clone())
    }
}

impl StoreArgs {
    /// The spec named, positionally or with --spec.
    pub fn spec_file(&self) -> Option<PathBuf> {
        self.spec_path.clone().or_else(|| self.spec.clone())
    }
}

impl RunArgs {
    /// Run options that carry only a spec, stages and the database flags (for the commands that
    /// talk to the database but run nothing).
    pub fn database_only(spec_path: Option<PathBuf>, stages: Vec<String>, db: DbArgs, spec: SpecArgs) -> RunArgs {
        RunArgs {
            spec_path,
            stages,
            dry_run: false,
            force: false,
            rejects_out: None,
            metrics_file: None,
            output: Output::Text,
            batch_size: None,
            verbose: false,
            quiet: false,
            sources: Vec::new(),
            assets_file: None,
            trades_file: None,
            s3_endpoint: None,
            s3_bucket: None,
            distribute: false,
            lease: std::time::Duration::from_secs(30),
            db,
            spec,
        }
    }
}

/// Where the job store is: the PostgreSQL target of a spec (and the database flags).
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The spec whose PostgreSQL target holds the jobs [default: $ETL_SPEC, then
    /// specs/small_etl.yaml]; `start` also registers its `schedules:`.
    #[arg(value_name = "SPEC", conflicts_with = "spec")]
    pub spec_path: Option<PathBuf>,
    /// The same as SPEC (the seed's flag).
    #[arg(long, value_name = "SPEC")]
    pub spec: Option<PathBuf>,
    #[command(flatten)]
    pub db: DbArgs,
    #[command(flatten)]
    pub spec_args: SpecArgs,
}

/// The seed's ETL commands a job can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EtlCommand {
    /// Every stage.
    Run,
    /// The assets stage.
    Assets,
    /// The trades stage.
    Trades,
}

/// A simple trigger's period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Interval {
    /// Once a day (at --at).
    Day,
    /// Every hour.
    Hour,
    /// Every minute.
    Minute,
}

/// `etl schedule add --catchup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CatchupArg {
    /// Make up none.
    Skip,
    /// Make up the latest missed firing.
    Latest,
    /// Make up every missed firing (at most --max-catchup).
    All,
}

/// `etl schedule` actions.
#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Run the scheduler in the foreground until SIGINT/SIGTERM, logging each firing.
    Start {
        #[command(flatten)]
        store: StoreArgs,
        /// Serve Prometheus metrics (runs, rows, rejects, durations, files, last success per
        /// job and stage, counted across firings) at http://ADDR/metrics.
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
    },
    /// Add (or replace) a job.
    Add {
        /// The job's id.
        #[arg(long, value_name = "ID")]
        job_id: String,
        /// What it runs: run (all stages), or the seed's aliases assets and trades (for
        /// `--stages assets` / `--stages trades`, in a spec with those stages).
        #[arg(long, value_enum, default_value_t = EtlCommand::Run)]
        etl_command: EtlCommand,
        /// Run every day, hour or minute.
        #[arg(long, value_enum)]
        interval: Option<Interval>,
        /// With --interval day: the time of day, HH:MM.
        #[arg(long, value_name = "HH:MM")]
        at: Option<String>,
        /// A cron expression instead: 5 fields, or 6 with seconds first.
        #[arg(long, value_name = "EXPR")]
        cron: Option<String>,
        /// These stages instead of --etl-command: a,b.
        #[arg(long, value_name = "A,B", value_delimiter = ',')]
        stages: Vec<String>,
        /// IANA time zone of the trigger.
        #[arg(long, default_value = "UTC")]
        timezone: String,
        /// Add it paused.
        #[arg(long)]
        paused: bool,
        /// Firings missed while no scheduler ran, made up when one starts: none (skip), the
        /// latest, or all (oldest first, at most --max-catchup).
        #[arg(long, value_enum, default_value_t = CatchupArg::Skip)]
        catchup: CatchupArg,
        /// With --catchup all: at most this many missed firings, the latest.
        #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
        max_catchup: u32,
        /// Try a firing that ends with exit 3 (S3 or the database unreachable, a file set with
        /// no file) again, up to N times.
        #[arg(long, value_name = "N", default_value_t = 0)]
        retries: u32,
        /// The wait before the first retry, doubling for each next one: 30s, 5m.
        #[arg(long, value_name = "DURATION", default_value = "5m")]
        retry_delay: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the jobs: id, spec, trigger, stages, enabled, next run, last run, last status.
    List {
        /// Report format: a table, or JSON (one object per job).
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a job.
    Remove {
        /// The job's id.
        #[arg(long, value_name = "ID")]
        job_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Pause a job: it stays, but does not fire.
    Pause {
        /// The job's id.
        #[arg(long, value_name = "ID")]
        job_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Resume a paused job.
    Resume {
        /// The job's id.
        #[arg(long, value_name = "ID")]
        job_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}
