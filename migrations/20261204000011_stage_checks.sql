-- Contracts (`checks:` of a stage): each result of each run, and a stage (and its run and firing)
-- whose `error` check failed, rolled back, recorded as `contract_failed` (exit 5).
CREATE TABLE IF NOT EXISTS etl_checks (
    run_id      BIGINT  NOT NULL REFERENCES etl_runs (run_id) ON DELETE CASCADE,
    stage       TEXT    NOT NULL,
    check_name  TEXT    NOT NULL,
    severity    TEXT    NOT NULL CHECK (severity IN ('error', 'warn')),
    passed      BOOLEAN NOT NULL,
    observed    TEXT,
    expected    TEXT,
    message     TEXT    NOT NULL,
    rows        JSONB,
    PRIMARY KEY (run_id, stage, check_name)
);

ALTER TABLE etl_runs DROP CONSTRAINT IF EXISTS etl_runs_status_check;
ALTER TABLE etl_runs ADD CONSTRAINT etl_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'rejected', 'over_budget', 'refused', 'contract_failed', 'failed', 'abandoned', 'missing', 'late'));
ALTER TABLE etl_run_stages DROP CONSTRAINT IF EXISTS etl_run_stages_status_check;
ALTER TABLE etl_run_stages ADD CONSTRAINT etl_run_stages_status_check
    CHECK (status IN ('running', 'succeeded', 'rejected', 'over_budget', 'refused', 'contract_failed', 'failed'));
ALTER TABLE etl_schedule_firings DROP CONSTRAINT IF EXISTS etl_schedule_firings_status_check;
ALTER TABLE etl_schedule_firings ADD CONSTRAINT etl_schedule_firings_status_check
    CHECK (status IN ('running', 'succeeded', 'rejected', 'over_budget', 'refused', 'contract_failed', 'failed', 'skipped', 'missing', 'late'));
