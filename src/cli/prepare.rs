//! The one step from flags to what runs (ripgrep's "HiArgs"): the spec loaded and checked, the
//! command line's connection, source and batch flags applied over it, the stages asked for
//! checked, the Plan compiled, and the run's options set. `etl run`, `clean`, `migrate`, the
//! job store and every scheduled firing go through it.

use std::path::PathBuf;

use super::args::{DbArgs, Output, RunArgs, SpecArgs};
use super::error::CliError;
use super::scratch;
use crate::exec::RunOptions;
use crate::spec::model::{Connection, Secret, Spec};
use crate::{exec, plan, spec};

/// The spec used when none is given: `$ETL_SPEC`, then specs/small_etl.yaml.
pub fn default_spec_path() -> PathBuf {
    std::env::var_os("ETL_SPEC").map_or_else(|| PathBuf::from("specs/small_etl.yaml"), PathBuf::from)
}

/// A spec ready to run: loaded with the flags applied, compiled, with its options and the
/// temporary directory the run may spill to (removed when this is dropped).
pub struct Prepared {
    /// The spec as loaded, flags applied.
    pub loaded: spec::LoadedSpec,
    /// What runs.
    pub plan: plan::Plan,
    /// How.
    pub opts: RunOptions,
    _temp: scratch::RunDir,
}

/// How to read a spec from the command line's spec flags.
pub fn load_options(args: &SpecArgs) -> spec::LoadOptions {
    spec::LoadOptions {
        env_name: args.env.clone(),
        config_dir: args.config_dir.clone(),
        sets: args.sets.clone(),
        date: args.date,
        ..spec::LoadOptions::with_process_env()
    }
}

/// Loads and checks the spec at `path`.
pub fn load(path: &std::path::Path, args: &SpecArgs) -> Result<spec::LoadedSpec, CliError> {
    Ok(spec::load(path, &load_options(args))?)
}

/// Loads and checks the spec at `path` for an offline command (`validate-spec`, `plan`): a
/// secret whose template reads an unset variable is left unset, so no production secret is
/// needed to lint a spec.
pub fn load_offline(path: &std::path::Path, args: &SpecArgs) -> Result<spec::LoadedSpec, CliError> {
    Ok(spec::load(path, &spec::LoadOptions { secrets_optional: true, ..load_options(args) })?)
}

/// The error for a stage the spec does not have.
pub fn unknown_stage(spec_path: &std::path::Path, spec: &Spec, stage: &str) -> CliError {
    let names: Vec<&str> = spec.stages.keys().map(String::as_str).collect();
    CliError::UnknownStage {
        spec: spec_path.display().to_string(),
        stage: stage.to_string(),
        stages: names.join(", "),
        hint: spec::diag::suggest(stage, names.iter().copied()).unwrap_or_else(|| "`etl plan` lists the stages".into()),
    }
}

/// Loads, checks and compiles the spec `args` name, with every flag applied.
pub fn prepare(args: &RunArgs) -> Result<Prepared, CliError> {
    prepare_loaded(args, load)
}

/// As [`prepare`], for `etl plan`: a secret whose template reads an unset variable is unset.
pub fn prepare_offline(args: &RunArgs) -> Result<Prepared, CliError> {
    prepare_loaded(args, load_offline)
}

fn prepare_loaded(args: &RunArgs, load: fn(&std::path::Path, &SpecArgs) -> Result<spec::LoadedSpec, CliError>) -> Result<Prepared, CliError> {
    let path = args.spec_path.clone().unwrap_or_else(default_spec_path);
    let mut loaded = load(&path, &args.spec)?;
    apply_flags(&mut loaded.spec, args)?;
    if let Some(s) = args.stages.iter().find(|s| !loaded.spec.stages.contains_key(*s)) {
        return Err(unknown_stage(&path, &loaded.spec, s));
    }
    let plan = plan::compile(&loaded.spec);
    let (temp, swept) = scratch::run_dir()?;
    let quiet = args.quiet || (args.output == Output::Json && !args.verbose);
    if swept.dirs > 0 {
        let mib = swept.bytes as f64 / (1024.0 * 1024.0);
        let what = format!("removed {} temporary director{} ({mib:.1} MiB) of runs that ended without removing them", swept.dirs, if swept.dirs == 1 { "y" } else { "ies" });
        exec::progress::Progress::new(quiet, true).step("run", &what);
    }
    let opts = RunOptions {
        stages: (!args.stages.is_empty()).then(|| args.stages.clone()),
        dry_run: args.dry_run,
        spec_path: path,
        spec_hash: loaded.hash.clone(),
        temp_dir: temp.path().to_path_buf(),
        duckdb_memory: exec::duckdb_memory(),
        job_id: None,
        date: loaded.date,
        quiet,
        verbose: args.verbose,
        force: args.force,
        replay: None,
        distribute: args.distribute,
        lease: args.lease,
    };
    Ok(Prepared { loaded, plan, opts, _temp: temp })
}

/// Applies the database flags over every postgres connection.
fn apply_db_flags(spec: &mut Spec, db: &DbArgs) {
    for conn in spec.connections.values_mut() {
        if let Connection::Postgres(pg) = conn {
            if let Some(h) = &db.db_host {
                pg.host = Some(h.clone());
            }
            if let Some(p) = db.db_port {
                pg.port = Some(p);
            }
            if let Some(d) = &db.db_name {
                pg.database = Some(d.clone());
            }
            if let Some(u) = &db.db_user {
                pg.user = Some(u.clone());
            }
            if let Some(p) = &db.db_password {
                pg.password = Some(Secret(p.clone()));
            }
        }
    }
}

/// Applies the command line's connection, source and batch flags: they override everything.
fn apply_flags(spec: &mut Spec, args: &RunArgs) -> Result<(), CliError> {
    apply_db_flags(spec, &args.db);
    for conn in spec.connections.values_mut() {
        if let Connection::S3(s3) = conn {
            if let Some(e) = &args.s3_endpoint {
                s3.endpoint = Some(e.clone());
            }
            if let Some(b) = &args.s3_bucket {
                s3.bucket = b.clone();
            }
        }
    }
    let mut sources: Vec<(String, String)> = Vec::new();
    if let Some(k) = &args.assets_file {
        sources.push(("assets".into(), k.clone()));
    }
    if let Some(k) = &args.trades_file {
        sources.push(("trades".into(), k.clone()));
    }
    for s in &args.sources {
        let (stage, key) = s
            .split_once('=')
            .ok_or_else(|| CliError::flag(format!("--source {s}"), "write STAGE=KEY", "e.g. --source trades=trades_2025.csv"))?;
        sources.push((stage.to_string(), key.to_string()));
    }
    for (stage, key) in sources {
        let names: Vec<&str> = spec.stages.keys().map(String::as_str).collect();
        let hint = spec::diag::suggest(&stage, names.iter().copied()).unwrap_or_else(|| format!("the stages are: {}", names.join(", ")));
        let problem = format!("no stage `{stage}` to read from {key} (stages: {})", names.join(", "));
        let st = spec.stages.get_mut(&stage).ok_or_else(|| CliError::flag(format!("--source {stage}={key}"), problem, hint))?;
        // A file named on the command line is where the shell says it is: relative to the
        // current directory, not to the local connection's folder. S3 keys stay keys.
        let local = matches!(spec.connections.get(&st.source.connection), Some(Connection::Local(_)));
        let key = match std::env::current_dir() {
            Ok(cwd) if local => cwd.join(&key).display().to_string(),
            _ => key,
        };
        if st.source.files.is_some() {
            // One file in place of a set: still a set (its ledger, `select`), of that file.
            if let Some((c, _)) = st.columns.iter().find(|(_, c)| c.from_path.is_some()) {
                return Err(CliError::flag(
                    format!("--source {stage}={key}"),
                    format!("stage `{stage}` reads a set of files and takes column `{c}` from their paths, which one file named here has no part of"),
                    format!("give the set another pattern instead: --set stages.{stage}.source.files=PATTERN"),
                ));
            }
            st.source.files = Some(key.replace(['*', '?', '{', '}'], "?"));
        } else {
            st.source.key = Some(key);
        }
    }
    if let Some(b) = args.batch_size {
        if b == 0 {
            return Err(CliError::flag("--batch-size 0", "a batch must hold at least one row", "e.g. --batch-size 10000"));
        }
        spec.defaults.batch_size = Some(b);
        for st in spec.stages.values_mut() {
            st.batch_size = Some(b);
        }
    }
    Ok(())
}
