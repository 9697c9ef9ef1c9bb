//! The job store: jobs kept in the `etl_schedules` table of a spec's PostgreSQL target, added,
//! listed, paused, resumed and removed by id.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};

use crate::spec::model::Catchup;

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
    /// Which missed firings a starting scheduler makes up.
    pub catchup: Catchup,
    /// With `catchup: all`, at most this many (the latest).
    pub max_catchup: u32,
    /// Retries of a firing that ended with exit 3.
    pub retries: u32,
    /// The wait before the first retry (doubling after).
    pub retry_delay: Duration,
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
/// otherwise for a new job). A new trigger (cron or time zone) starts the count of missed firings
/// afresh: the old trigger's ticks are not the new one's to make up.
pub async fn upsert(pool: &PgPool, j: &JobDef, origin: &str, spec_hash: Option<&str>) -> Result<(), ExecError> {
    sqlx::query(
        "INSERT INTO etl_schedules (job_id, spec_path, spec_hash, stages, cron, trigger, timezone, enabled, origin,
           catchup, max_catchup, retries, retry_delay_secs)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         ON CONFLICT (job_id) DO UPDATE SET spec_path = EXCLUDED.spec_path, spec_hash = EXCLUDED.spec_hash,
           stages = EXCLUDED.stages, cron = EXCLUDED.cron, trigger = EXCLUDED.trigger, timezone = EXCLUDED.timezone,
           origin = EXCLUDED.origin, catchup = EXCLUDED.catchup, max_catchup = EXCLUDED.max_catchup,
           retries = EXCLUDED.retries, retry_delay_secs = EXCLUDED.retry_delay_secs, updated_at = now(),
           since = CASE WHEN (etl_schedules.cron, etl_schedules.timezone) IS DISTINCT FROM (EXCLUDED.cron, EXCLUDED.timezone)
                        THEN now() ELSE etl_schedules.since END",
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
    .bind(j.catchup.as_str())
    .bind(j.max_catchup as i32)
    .bind(j.retries as i32)
    .bind(j.retry_delay.as_secs().max(1) as i64)
    .execute(pool)
    .await
    .map_err(db("save the job"))?;
    Ok(())
}

/// Every job, by id.
pub async fn list(pool: &PgPool) -> Result<Vec<JobRow>, ExecError> {
    let rows = sqlx::query(
        "SELECT job_id, spec_path, stages, cron, trigger, timezone, enabled, last_run_at, last_status,
                catchup, max_catchup, retries, retry_delay_secs
           FROM etl_schedules ORDER BY job_id",
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
                catchup: match r.get::<String, _>(9).as_str() {
                    "latest" => Catchup::Latest,
                    "all" => Catchup::All,
                    _ => Catchup::Skip,
                },
                max_catchup: r.get::<i32, _>(10).max(1) as u32,
                retries: r.get::<i32, _>(11).max(0) as u32,
                retry_delay: Duration::from_secs(r.get::<i64, _>(12).max(1) as u64),
            },
            last_run_at: r.get(7),
            last_status: r.get(8),
        })
        .collect())
}

/// Since when a job's missed firings are counted: its last firing, or when its trigger was set
/// or it was last resumed, whichever is later (None: no such job).
pub async fn missed_since(pool: &PgPool, job_id: &str) -> Result<Option<DateTime<Utc>>, ExecError> {
    sqlx::query_scalar("SELECT greatest((SELECT max(fire_at) FROM etl_schedule_firings WHERE job_id = $1), since) FROM etl_schedules WHERE job_id = $1")
        .bind(job_id)
        .fetch_optional(pool)
        .await
        .map_err(db("read the job's last firing"))
}

/// Pauses or resumes a job; false when there is no such job. A resumed job's missed firings are
/// counted from now: a pause is not a downtime to make up.
pub async fn set_enabled(pool: &PgPool, job_id: &str, enabled: bool) -> Result<bool, ExecError> {
    let r = sqlx::query("UPDATE etl_schedules SET since = CASE WHEN $2 AND NOT enabled THEN now() ELSE since END, enabled = $2, updated_at = now() WHERE job_id = $1")
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

