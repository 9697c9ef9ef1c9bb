-- Scheduled jobs (etl schedule add/pause/resume/remove, and a spec's own `schedules:`), and one
-- row per firing: its primary key is what lets several schedulers run each firing once.
CREATE TABLE IF NOT EXISTS etl_schedules (
    job_id       TEXT        PRIMARY KEY,
    spec_path    TEXT        NOT NULL,
    spec_hash    TEXT,
    stages       TEXT[],
    cron         TEXT        NOT NULL,
    trigger      TEXT        NOT NULL,
    timezone     TEXT        NOT NULL DEFAULT 'UTC',
    enabled      BOOLEAN     NOT NULL DEFAULT true,
    origin       TEXT        NOT NULL DEFAULT 'cli' CHECK (origin IN ('cli', 'spec')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_run_at  TIMESTAMPTZ,
    last_status  TEXT,
    last_run_id  BIGINT
);

CREATE TABLE IF NOT EXISTS etl_schedule_firings (
    job_id       TEXT        NOT NULL,
    fire_at      TIMESTAMPTZ NOT NULL,
    owner        TEXT        NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    status       TEXT        NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'succeeded', 'rejected', 'failed', 'skipped')),
    run_id       BIGINT,
    error        TEXT,
    PRIMARY KEY (job_id, fire_at)
);
