//! The job store: jobs kept in the `etl_schedules` table of a spec's PostgreSQL target, added,
//! listed, paused, resumed and removed by id.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use crate::exec::ExecError;
use crate::exec::postgres::db;

/// A job as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct JobDef {
    /// Its id.
    pub job_id: String,
    /// The spec it runs (absolute path).
    pub spec_path: String,
    /// Stages (None: all).
    pub stages: Option<Vec<String>>,
    /// Six-field cron expression (seconds first).
    pub cron: String,
    /// The trigger as a person wrote it.
    pub trigger: String,
    /// IANA time zone.
    pub timezone: String,
    /// Whether it fires.
    pub enabled: bool,
}

/// A job with its history, for `etl schedule list`.
#[derive(Debug, Clone)]
pub struct JobRow {
    /// The job.
    pub def: JobDef,
    /// When it last fired.
    pub last_run_at: Option<DateTime<Utc>>,
    /// How that ended.
    pub last_status: Option<String>,
}

/// Saves a job (replacing one with the same id; pause state is kept unless `enabled` says
/// otherwise for a new job).
pub async fn upsert(pool: &PgPool, j: &JobDef, origin: &str, spec_hash: Option<&str>) -> Result<(), ExecError> {
    sqlx::query(
        "INSERT INTO etl_schedules (job_id, spec_path, spec_hash, stages, cron, trigger, timezone, enabled, origin)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         ON CONFLICT (job_id) DO UPDATE SET spec_path = EXCLUDED.spec_path, spec_hash = EXCLUDED.spec_hash,
           stages = EXCLUDED.stages, cron = EXCLUDED.cron, trigger = EXCLUDED.trigger, timezone = EXCLUDED.timezone,
           origin = EXCLUDED.origin, updated_at = now()",
    )
    .bind(&j.job_id)
    .bind(&j.spec_path)
    .bind(spec_hash)
    .bind(&j.stages)
    .bind(&j.cron)
    .bind(&j.trigger)
    .bind(&j.timezone)
    .bind(j.enabled)
    .bind(origin)
    .execute(pool)
    .await
    .map_err(db("save the job"))?;
    Ok(())
}

/// Every job, by id.
pub async fn list(pool: &PgPool) -> Result<Vec<JobRow>, ExecError> {
    let rows = sqlx::query(
        "SELECT job_id, spec_path, stages, cron, trigger, timezone, enabled, last_run_at, last_status FROM etl_schedules ORDER BY job_id",
    )
    .fetch_all(pool)
    .await
    .map_err(db("read the jobs"))?;
    Ok(rows
        .iter()
        .map(|r| JobRow {
            def: JobDef {
                job_id: r.get(0),
                spec_path: r.get(1),
                stages: r.get(2),
                cron: r.get(3),
                trigger: r.get(4),
                timezone: r.get(5),
                enabled: r.get(6),
            },
            last_run_at: r.get(7),
            last_status: r.get(8),
        })
        .collect())
}

/// Pauses or resumes a job; false when there is no such job.
pub async fn set_enabled(pool: &PgPool, job_id: &str, enabled: bool) -> Result<bool, ExecError> {
    let r = sqlx::query("UPDATE etl_schedules SET enabled = $2, updated_at = now() WHERE job_id = $1")
        .bind(job_id)
        .bind(enabled)
        .execute(pool)
        .await
        .map_err(db("change the job"))?;
    Ok(r.rows_affected() == 1)
}

/// Removes a job; false when there is no such job.
pub async fn remove(pool: &PgPool, job_id: &str) -> Result<bool, ExecError> {
    let r = sqlx::query("DELETE FROM etl_schedules WHERE job_id = $1").bind(job_id).execute(pool).await.map_err(db("remove the job"))?;
    Ok(r.rows_affected() == 1)
}

