-- Exit code 5 (the data was refused, nothing of the stage loaded): a stage refused whole
-- (`refused`: a `replace` with no valid rows), and runs and scheduled firings recorded with their
-- stages' status (`over_budget`, `refused`) instead of `rejected`.
ALTER TABLE etl_runs DROP CONSTRAINT IF EXISTS etl_runs_status_check;
ALTER TABLE etl_runs ADD CONSTRAINT etl_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'rejected', 'over_budget', 'refused', 'failed'));
ALTER TABLE etl_run_stages DROP CONSTRAINT IF EXISTS etl_run_stages_status_check;
ALTER TABLE etl_run_stages ADD CONSTRAINT etl_run_stages_status_check
    CHECK (status IN ('running', 'succeeded', 'rejected', 'over_budget', 'refused', 'failed'));
ALTER TABLE etl_schedule_firings DROP CONSTRAINT IF EXISTS etl_schedule_firings_status_check;
ALTER TABLE etl_schedule_firings ADD CONSTRAINT etl_schedule_firings_status_check
    CHECK (status IN ('running', 'succeeded', 'rejected', 'over_budget', 'refused', 'failed', 'skipped'));
