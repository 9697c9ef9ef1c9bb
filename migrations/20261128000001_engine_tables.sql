-- The engine's own tables: one row per run, one per stage of a run, one per rejected value.
-- A run killed mid-way stays 'running' with no finished_at: unfinished, never 'succeeded'.
CREATE TABLE IF NOT EXISTS etl_runs (
    run_id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    spec_name    TEXT        NOT NULL,
    spec_hash    TEXT        NOT NULL,
    spec_path    TEXT        NOT NULL,
    job_id       TEXT,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    status       TEXT        NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'succeeded', 'rejected', 'failed')),
    error        TEXT,
    pid          INTEGER     NOT NULL DEFAULT pg_backend_pid(),
    host         TEXT
);

CREATE TABLE IF NOT EXISTS etl_run_stages (
    run_id          BIGINT      NOT NULL REFERENCES etl_runs (run_id) ON DELETE CASCADE,
    stage           TEXT        NOT NULL,
    source          TEXT        NOT NULL,
    source_bytes    BIGINT,
    source_etag     TEXT,
    started_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at     TIMESTAMPTZ,
    status          TEXT        NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'succeeded', 'rejected', 'failed', 'over_budget')),
    rows_read       BIGINT,
    rows_inserted   BIGINT,
    rows_updated    BIGINT,
    rows_unchanged  BIGINT,
    rows_rejected   BIGINT,
    rows_warned     BIGINT,
    balanced        BOOLEAN,
    error           TEXT,
    PRIMARY KEY (run_id, stage)
);

CREATE TABLE IF NOT EXISTS etl_rejects (
    run_id       BIGINT NOT NULL REFERENCES etl_runs (run_id) ON DELETE CASCADE,
    stage        TEXT   NOT NULL,
    source       TEXT   NOT NULL,
    line         BIGINT NOT NULL,
    column_name  TEXT,
    rule         TEXT   NOT NULL,
    value        TEXT,
    message      TEXT   NOT NULL,
    severity     TEXT   NOT NULL CHECK (severity IN ('error', 'warn'))
);

CREATE INDEX IF NOT EXISTS etl_rejects_run_stage ON etl_rejects (run_id, stage, line);
