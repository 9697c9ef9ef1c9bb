//! The statements that keep the engine's own records on the first target of a run: the run,
//! each stage's outcome with its digests, every reject, and what the next run reads back to
//! reuse a load. PostgreSQL's tables come from the migrations in `migrations/`; a DuckDB
//! target's are created by `DUCKDB_TABLES`.

/// PostgreSQL: records the start of a run and returns its id.
pub const BEGIN_RUN: &str =
    "INSERT INTO etl_runs (spec_name, spec_hash, spec_path, job_id, host, business_date) VALUES ($1, $2, $3, $4, $5, $6) RETURNING run_id";

/// PostgreSQL: held by a live run on a connection of its own until it ends (a dead process's
/// lock goes with its connection), so the next run can tell a dead run from a running one. Keyed
/// by the `etl_runs` table too: run ids of two record tables (two schemas) never share a lock.
pub const HOLD_RUN: &str = "SELECT pg_advisory_lock(hashtextextended('etl-run:' || 'etl_runs'::regclass::oid::text || ':' || $1::text, 0))";

/// PostgreSQL: the other runs of the spec still recorded as running.
pub const RUNNING_RUNS: &str = "SELECT run_id FROM etl_runs WHERE spec_name = $1 AND status = 'running' AND run_id <> $2 ORDER BY run_id";

/// PostgreSQL: true when no live process holds that run's lock (then this session holds it).
pub const TRY_RUN: &str = "SELECT pg_try_advisory_lock(hashtextextended('etl-run:' || 'etl_runs'::regclass::oid::text || ':' || $1::text, 0))";

/// PostgreSQL: records a dead process's run as abandoned.
pub const ABANDON_RUN: &str =
    "UPDATE etl_runs SET status = 'abandoned', finished_at = now(), error = 'the process running it ended without finishing it; found by run ' || $2::text WHERE run_id = $1 AND status = 'running'";

/// PostgreSQL: lets go of a dead run's lock once it is recorded.
pub const RELEASE_RUN: &str = "SELECT pg_advisory_unlock(hashtextextended('etl-run:' || 'etl_runs'::regclass::oid::text || ':' || $1::text, 0))";

/// PostgreSQL: records the end of a run.
pub const FINISH_RUN: &str = "UPDATE etl_runs SET finished_at = now(), status = $2, error = $3 WHERE run_id = $1";

/// PostgreSQL: records the webhooks that failed to be told of a run's end.
pub const NOTIFY_FAILED: &str = "UPDATE etl_runs SET notify_error = $2 WHERE run_id = $1";

/// DuckDB: as `NOTIFY_FAILED`.
pub const DUCKDB_NOTIFY_FAILED: &str = "UPDATE etl_runs SET notify_error = ? WHERE run_id = ?";

/// PostgreSQL: records a stage's outcome and digests (its rejects' among them). A set whose files
/// commit one by one (`atomicity: file`) records each file's outcome into the stage's one row, in
/// that file's transaction: the row adds up the files committed, its status the worst of theirs.
pub const RECORD_STAGE: &str = "INSERT INTO etl_run_stages (run_id, stage, source, source_bytes, source_etag, started_at, finished_at, status, rows_read,
           rows_inserted, rows_updated, rows_unchanged, rows_rejected, rows_warned, balanced, error,
           target_table, context_fingerprint, source_fingerprint, table_state, unchanged_since, rejects_digest, replay_of, lines_context, as_of)
         VALUES ($1, $2, $3, $4, $5, $22, clock_timestamp(), $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $23, $24::date)
    ON CONFLICT (run_id, stage) DO UPDATE SET
           source_bytes = etl_run_stages.source_bytes + EXCLUDED.source_bytes, finished_at = EXCLUDED.finished_at,
           status = (ARRAY['running', 'succeeded', 'rejected', 'missing', 'late', 'over_budget', 'refused', 'contract_failed', 'abandoned', 'failed'])[greatest(
               array_position(ARRAY['running', 'succeeded', 'rejected', 'missing', 'late', 'over_budget', 'refused', 'contract_failed', 'abandoned', 'failed'], etl_run_stages.status),
               array_position(ARRAY['running', 'succeeded', 'rejected', 'missing', 'late', 'over_budget', 'refused', 'contract_failed', 'abandoned', 'failed'], EXCLUDED.status))],
           rows_read = etl_run_stages.rows_read + EXCLUDED.rows_read,
           rows_inserted = CASE WHEN etl_run_stages.rows_inserted IS NULL AND EXCLUDED.rows_inserted IS NULL THEN NULL ELSE coalesce(etl_run_stages.rows_inserted, 0) + coalesce(EXCLUDED.rows_inserted, 0) END,
           rows_updated = CASE WHEN etl_run_stages.rows_updated IS NULL AND EXCLUDED.rows_updated IS NULL THEN NULL ELSE coalesce(etl_run_stages.rows_updated, 0) + coalesce(EXCLUDED.rows_updated, 0) END,
           rows_unchanged = CASE WHEN etl_run_stages.rows_unchanged IS NULL AND EXCLUDED.rows_unchanged IS NULL THEN NULL ELSE coalesce(etl_run_stages.rows_unchanged, 0) + coalesce(EXCLUDED.rows_unchanged, 0) END,
           rows_rejected = etl_run_stages.rows_rejected + EXCLUDED.rows_rejected, rows_warned = etl_run_stages.rows_warned + EXCLUDED.rows_warned,
           balanced = etl_run_stages.balanced AND EXCLUDED.balanced, error = nullif(concat_ws('; ', etl_run_stages.error, EXCLUDED.error), ''),
           rejects_digest = NULL";

/// PostgreSQL: marks a rejected row loaded by a replay (`$1`: the replay's run; the row's run,
/// stage, file and line).
pub const MARK_REPLAYED: &str =
    "UPDATE etl_rejects SET replayed_by = $1 WHERE run_id = $2 AND stage = $3 AND source = $4 AND line = $5 AND replayed_by IS NULL";

/// PostgreSQL: records one result of a stage's contract (`$9`: a `sql` check's rows, a JSON array).
pub const RECORD_CHECK: &str = "INSERT INTO etl_checks (run_id, stage, check_name, severity, passed, observed, expected, message, rows)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)";

/// PostgreSQL: records a stage's rejects (CSV, in the stage's record transaction).
pub const COPY_REJECTS: &str =
    "COPY etl_rejects (run_id, stage, source, line, column_name, rule, value, message, severity, record) FROM STDIN (FORMAT csv)";

/// PostgreSQL: a stage's latest load by a spec that committed rows, with its digests.
pub const LAST_LOAD: &str = "SELECT s.run_id, coalesce(s.unchanged_since, s.run_id), s.context_fingerprint, s.source_fingerprint, s.table_state,
                s.status, s.rows_read, s.rows_rejected, s.rows_warned, s.rejects_digest, s.lines_context, s.as_of::text
           FROM etl_run_stages s JOIN etl_runs r ON r.run_id = s.run_id
          WHERE r.spec_name = $1 AND s.stage = $2 AND s.target_table = $3 AND s.status IN ('succeeded', 'rejected') AND s.replay_of IS NULL
          ORDER BY s.finished_at DESC, s.run_id DESC
          LIMIT 1";

/// PostgreSQL: the rejects a run recorded for a stage, in line order.
pub const REJECTS_OF: &str =
    "SELECT line, column_name, rule, value, message, severity, record::text FROM etl_rejects WHERE run_id = $1 AND stage = $2 ORDER BY line, rule, column_name NULLS FIRST";

/// PostgreSQL: for `etl rejects`, the rejects of each stage's latest load by the spec (`$2` a
/// run: its stages' loads; a stage it found unchanged, the load it reused), filtered by stage,
/// rule and line when given (`$3`, `$4`, `$5`), with each rejected row's fields as read.
pub const REJECTS_LIST: &str = "SELECT j.run_id, j.stage, j.source, j.line, j.column_name, j.rule, j.value, j.message, j.severity, j.record::text, j.replayed_by,
                (SELECT business_date::text FROM etl_runs WHERE run_id = j.run_id)
           FROM etl_rejects j
           JOIN (SELECT DISTINCT ON (s.stage) s.stage, coalesce(s.unchanged_since, s.run_id) AS loaded_by
                   FROM etl_run_stages s JOIN etl_runs r ON r.run_id = s.run_id
                  WHERE r.spec_name = $1 AND ($2::bigint IS NULL OR s.run_id = $2) AND s.status <> 'running' AND s.replay_of IS NULL
                  ORDER BY s.stage, s.run_id DESC) l ON l.stage = j.stage AND l.loaded_by = j.run_id
          WHERE ($3::text IS NULL OR j.stage = $3) AND ($4::text IS NULL OR j.rule = $4) AND ($5::bigint IS NULL OR j.line = $5)
          ORDER BY j.stage, j.source, j.line, j.rule, j.column_name NULLS FIRST";

/// PostgreSQL: the files of a stage's set already loaded (the file ledger), for `select: new`.
pub const LEDGER_LOADED: &str = "SELECT file_key, digest, etag, bytes, run_id FROM etl_files
          WHERE spec_name = $1 AND stage = $2 AND target_table = $3 AND origin = $4 AND status = 'loaded'
          ORDER BY file_key, run_id";

/// PostgreSQL: records a file a stage loaded, in the stage's transaction.
pub const LEDGER_RECORD: &str = "INSERT INTO etl_files (run_id, spec_name, stage, target_table, origin, file_key, bytes, etag, digest,
           rows_read, rows_loaded, rows_rejected, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'loaded')";

/// PostgreSQL: for `etl backfill`, each business date in a range with the stages (and their
/// tables) a finished run of the spec loaded or found unchanged for it: a date whose every
/// selected stage is here, into the table it loads now, is done, and a resumed backfill skips it.
pub const DATES_DONE: &str = "SELECT DISTINCT r.business_date::text, s.stage, s.target_table FROM etl_runs r JOIN etl_run_stages s ON s.run_id = r.run_id
          WHERE r.spec_name = $1 AND r.business_date BETWEEN $2::date AND $3::date
            AND r.status IN ('succeeded', 'rejected') AND s.status IN ('succeeded', 'rejected') AND s.replay_of IS NULL
          ORDER BY 1, 2";

/// DuckDB: as `DATES_DONE`.
pub const DUCKDB_DATES_DONE: &str = "SELECT DISTINCT CAST(r.business_date AS VARCHAR), s.stage, CAST(NULL AS VARCHAR) FROM etl_runs r JOIN etl_run_stages s ON s.run_id = r.run_id
          WHERE r.spec_name = ? AND r.business_date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE)
            AND r.status IN ('succeeded', 'rejected') AND s.status IN ('succeeded', 'rejected')
          ORDER BY 1, 2";

/// DuckDB: the file ledger's reads and writes (as `LEDGER_LOADED`, `LEDGER_RECORD`).
pub const DUCKDB_LEDGER_LOADED: &str = "SELECT file_key, digest, etag, bytes, run_id FROM etl_files
          WHERE spec_name = ? AND stage = ? AND target_table = ? AND origin = ? AND status = 'loaded'
          ORDER BY file_key, run_id";

/// DuckDB: records a file a stage loaded.
pub const DUCKDB_LEDGER_RECORD: &str = "INSERT INTO etl_files (run_id, spec_name, stage, target_table, origin, file_key, bytes, etag, digest,
           rows_read, rows_loaded, rows_rejected, status)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'loaded')";

/// DuckDB: the engine's tables in a target file.
pub const DUCKDB_TABLES: &str = "
CREATE SEQUENCE IF NOT EXISTS etl_runs_seq;
CREATE TABLE IF NOT EXISTS etl_runs (
    run_id BIGINT PRIMARY KEY DEFAULT nextval('etl_runs_seq'), spec_name TEXT NOT NULL, spec_hash TEXT NOT NULL,
    spec_path TEXT NOT NULL, job_id TEXT, started_at TIMESTAMPTZ NOT NULL DEFAULT now(), finished_at TIMESTAMPTZ,
    status TEXT NOT NULL DEFAULT 'running', error TEXT);
ALTER TABLE etl_runs ADD COLUMN IF NOT EXISTS business_date DATE;
ALTER TABLE etl_runs ADD COLUMN IF NOT EXISTS notify_error VARCHAR;
CREATE TABLE IF NOT EXISTS etl_run_stages (
    run_id BIGINT NOT NULL, stage TEXT NOT NULL, source TEXT NOT NULL, source_bytes BIGINT, source_etag TEXT,
    finished_at TIMESTAMPTZ DEFAULT now(), status TEXT NOT NULL, rows_read BIGINT, rows_inserted BIGINT,
    rows_updated BIGINT, rows_unchanged BIGINT, rows_rejected BIGINT, rows_warned BIGINT, balanced BOOLEAN, error TEXT);
CREATE TABLE IF NOT EXISTS etl_rejects (
    run_id BIGINT NOT NULL, stage TEXT NOT NULL, source TEXT NOT NULL, line BIGINT NOT NULL, column_name TEXT,
    rule TEXT NOT NULL, value TEXT, message TEXT NOT NULL, severity TEXT NOT NULL);
ALTER TABLE etl_rejects ADD COLUMN IF NOT EXISTS record VARCHAR;
CREATE TABLE IF NOT EXISTS etl_files (
    run_id BIGINT NOT NULL, spec_name TEXT NOT NULL, stage TEXT NOT NULL, target_table TEXT NOT NULL, origin TEXT NOT NULL,
    file_key TEXT NOT NULL, bytes BIGINT NOT NULL, etag TEXT, digest TEXT NOT NULL, rows_read BIGINT NOT NULL,
    rows_loaded BIGINT NOT NULL, rows_rejected BIGINT NOT NULL, status TEXT NOT NULL, loaded_at TIMESTAMPTZ DEFAULT now());
";

/// DuckDB: records the start of a run and returns its id.
pub const DUCKDB_BEGIN_RUN: &str =
    "INSERT INTO etl_runs (spec_name, spec_hash, spec_path, job_id, business_date) VALUES (?, ?, ?, ?, CAST(? AS DATE)) RETURNING run_id";

/// DuckDB: records the end of a run.
pub const DUCKDB_FINISH_RUN: &str = "UPDATE etl_runs SET finished_at = now(), status = ?, error = ? WHERE run_id = ?";

/// DuckDB: records a stage's outcome.
pub const DUCKDB_RECORD_STAGE: &str = "INSERT INTO etl_run_stages (run_id, stage, source, source_bytes, source_etag, status, rows_read, rows_inserted, rows_updated, rows_unchanged, rows_rejected, rows_warned, balanced, error)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// DuckDB: the table a stage's rejects are appended to (run_id, stage, source, line,
/// column_name, rule, value, message, severity, record).
pub const DUCKDB_REJECTS_TABLE: &str = "etl_rejects";

/// PostgreSQL, for `etl report`: the spec's latest runs up to one (all when $2 is NULL), newest
/// first, at most $3.
pub const REPORT_RUNS: &str = "SELECT run_id, business_date::text, to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
                extract(epoch FROM finished_at - started_at)::float8, status, error, job_id
           FROM etl_runs WHERE spec_name = $1 AND ($2::bigint IS NULL OR run_id <= $2)
          ORDER BY run_id DESC LIMIT $3";

/// PostgreSQL, for `etl report`: the stages of those runs, in run order.
pub const REPORT_STAGES: &str = "SELECT run_id, stage, source, source_bytes, status, rows_read, rows_inserted, rows_updated, rows_unchanged,
                rows_rejected, rows_warned, extract(epoch FROM finished_at - started_at)::float8, unchanged_since, error
           FROM etl_run_stages WHERE run_id = ANY($1) ORDER BY run_id, started_at, stage";

/// PostgreSQL, for `etl report`: a run's rejected rows by stage and rule (a row counted once per
/// rule), those of a stage it found unchanged being the rejects of the load it reused.
pub const REPORT_REJECTS_BY_RULE: &str = "SELECT j.stage, j.rule, count(DISTINCT (j.source, j.line))
           FROM etl_rejects j JOIN etl_run_stages s ON s.stage = j.stage AND coalesce(s.unchanged_since, s.run_id) = j.run_id
          WHERE s.run_id = $1 AND j.severity = 'error'
          GROUP BY j.stage, j.rule ORDER BY 3 DESC, 1, 2";

/// PostgreSQL, for `etl report`: a run's rejected values by stage and column (`(row)` for a
/// rule of the whole row).
pub const REPORT_REJECTS_BY_COLUMN: &str = "SELECT j.stage, coalesce(j.column_name, '(row)'), count(*)
           FROM etl_rejects j JOIN etl_run_stages s ON s.stage = j.stage AND coalesce(s.unchanged_since, s.run_id) = j.run_id
          WHERE s.run_id = $1 AND j.severity = 'error'
          GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2";

/// PostgreSQL, for `etl report`: a run's contracts and what each found.
pub const REPORT_CHECKS: &str = "SELECT stage, check_name, severity, passed, observed, expected, message
           FROM etl_checks WHERE run_id = $1 ORDER BY stage, check_name";

/// PostgreSQL, for `etl report`: the files of sets a run loaded (the file ledger).
pub const REPORT_FILES: &str = "SELECT stage, file_key, bytes, rows_read, rows_loaded, rows_rejected
           FROM etl_files WHERE run_id = $1 ORDER BY stage, file_key";

/// PostgreSQL: a table an analytic reads (`$1`, its name as written, resolved by the query's
/// search path) or a stage loaded (its qualified name): its oid, and whether it is a plain or
/// partitioned table (a view's result is not taken from an earlier run). No row: no such table.
pub const ANALYTIC_TABLE: &str = "SELECT c.oid::bigint, c.relkind IN ('r', 'p') FROM pg_class c WHERE c.oid = to_regclass($1)";

/// PostgreSQL: the latest result of an analytic of the spec whose digest (its statements and its
/// tables' states) is `$3`, with the run that queried it.
pub const LAST_ANALYTIC: &str = "SELECT coalesce(a.reused_from, a.run_id), a.result::text FROM etl_analytics a JOIN etl_runs r ON r.run_id = a.run_id
          WHERE r.spec_name = $1 AND a.analytic = $2 AND a.digest = $3 ORDER BY a.run_id DESC LIMIT 1";

/// PostgreSQL: records an analytic's result and digest with the run (`$5`: the run whose result
/// it reported, when it did not query).
pub const RECORD_ANALYTIC: &str = "INSERT INTO etl_analytics (run_id, analytic, digest, result, reused_from) VALUES ($1, $2, $3, $4::jsonb, $5)";

/// DuckDB, for `etl report`: as `REPORT_RUNS` (times as text, the duration taken from them).
pub const DUCKDB_REPORT_RUNS: &str = "SELECT run_id, CAST(business_date AS VARCHAR), CAST(started_at AS VARCHAR), CAST(finished_at AS VARCHAR), status, error, job_id
          FROM etl_runs WHERE spec_name = ? AND (CAST(? AS BIGINT) IS NULL OR run_id <= CAST(? AS BIGINT)) ORDER BY run_id DESC LIMIT ?";

/// DuckDB, for `etl report`: the stages of a run (DuckDB keeps no stage start, and never skips a
/// stage).
pub const DUCKDB_REPORT_STAGES: &str = "SELECT stage, source, source_bytes, status, rows_read, rows_inserted, rows_updated, rows_unchanged, rows_rejected, rows_warned, error
          FROM etl_run_stages WHERE run_id = ? ORDER BY finished_at, stage";

/// DuckDB, for `etl report`: a run's rejected rows by stage and rule.
pub const DUCKDB_REPORT_REJECTS_BY_RULE: &str = "SELECT stage, rule, count(DISTINCT source || ':' || CAST(line AS VARCHAR)) FROM etl_rejects
          WHERE run_id = ? AND severity = 'error' GROUP BY stage, rule ORDER BY 3 DESC, 1, 2";

/// DuckDB, for `etl report`: a run's rejected values by stage and column.
pub const DUCKDB_REPORT_REJECTS_BY_COLUMN: &str = "SELECT stage, coalesce(column_name, '(row)'), count(*) FROM etl_rejects
          WHERE run_id = ? AND severity = 'error' GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2";

/// DuckDB, for `etl report`: the files of sets a run loaded.
pub const DUCKDB_REPORT_FILES: &str = "SELECT stage, file_key, bytes, rows_read, rows_loaded, rows_rejected FROM etl_files WHERE run_id = ? ORDER BY stage, file_key";

/// PostgreSQL, `etl run --distribute`: a file of a stage's set left to the workers (`$1` run,
/// `$2` spec, `$3` stage, `$4` business date, `$5` the file's key).
pub const QUEUE_FILE: &str = "INSERT INTO etl_queue (run_id, spec_name, stage, business_date, file_key) VALUES ($1, $2, $3, $4::date, $5) ON CONFLICT (run_id, stage, file_key) DO NOTHING";

/// PostgreSQL: a worker (`$2`) claims the oldest file of the spec (`$1`; of the run `$4`, or any)
/// that waits, or whose lease ran out, for `$3` seconds.
pub const QUEUE_CLAIM: &str = "UPDATE etl_queue SET state = 'running', worker = $2, lease_until = clock_timestamp() + make_interval(secs => $3), attempts = attempts + 1
     WHERE id = (SELECT id FROM etl_queue WHERE spec_name = $1 AND ($4::bigint IS NULL OR run_id = $4)
                   AND (state = 'queued' OR (state = 'running' AND lease_until < clock_timestamp()))
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
     RETURNING id, run_id, stage, business_date::text, file_key, attempts";

/// PostgreSQL: the claim's lease renewed for `$3` seconds (none if another worker took it).
pub const QUEUE_RENEW: &str = "UPDATE etl_queue SET lease_until = clock_timestamp() + make_interval(secs => $3) WHERE id = $1 AND worker = $2 AND state = 'running'";

/// PostgreSQL: the claimed file's end (`$3` its load's status, `$4`-`$8` its counts), in the
/// file's own transaction when it committed rows; no row when the claim was lost.
pub const QUEUE_DONE: &str = "UPDATE etl_queue SET state = 'done', status = $3, rows_read = $4, rows_inserted = $5, rows_updated = $6, rows_unchanged = $7, rows_rejected = $8,
           lease_until = NULL, finished_at = clock_timestamp() WHERE id = $1 AND worker = $2 AND state = 'running'";

/// PostgreSQL: the claimed file failed (`$3` why).
pub const QUEUE_FAILED: &str = "UPDATE etl_queue SET state = 'failed', error = $3, lease_until = NULL, finished_at = clock_timestamp() WHERE id = $1 AND worker = $2 AND state = 'running'";

/// PostgreSQL: of the files queued before the claimed one (`$3`) in its run (`$1`) and stage
/// (`$2`), how many have not ended, and how many of those wait for a worker (queued, or their
/// worker's lease ran out). A file whose order decides the table waits until the first is 0.
pub const QUEUE_TURN: &str = "SELECT count(*) FILTER (WHERE state IN ('queued', 'running')),
           count(*) FILTER (WHERE state = 'queued' OR (state = 'running' AND lease_until < clock_timestamp()))
      FROM etl_queue WHERE run_id = $1 AND stage = $2 AND id < $3";

/// PostgreSQL: a claim handed back unloaded (`$1` its row, `$2` its worker), so the worker can
/// claim an earlier file that waits for one; not counted as an attempt.
pub const QUEUE_HAND_BACK: &str = "UPDATE etl_queue SET state = 'queued', worker = NULL, lease_until = NULL, attempts = attempts - 1 WHERE id = $1 AND worker = $2 AND state = 'running'";

/// PostgreSQL: how many of a run's (`$1`) stage's (`$2`) files are still to load, and how many failed.
pub const QUEUE_LEFT: &str = "SELECT count(*) FILTER (WHERE state IN ('queued', 'running')), count(*) FILTER (WHERE state = 'failed') FROM etl_queue WHERE run_id = $1 AND stage = $2";

/// PostgreSQL: a run's (`$1`) stage's (`$2`) files as the queue ended them.
pub const QUEUE_ENDS: &str = "SELECT file_key, state, coalesce(status, ''), coalesce(worker, ''), coalesce(rows_read, 0), coalesce(rows_inserted, 0), coalesce(rows_updated, 0),
           coalesce(rows_unchanged, 0), coalesce(rows_rejected, 0), coalesce(error, ''), attempts FROM etl_queue WHERE run_id = $1 AND stage = $2 ORDER BY file_key";
