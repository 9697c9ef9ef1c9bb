-- A run left `running` by a process that died (killed, its machine lost) is marked `abandoned`
-- by the next run of its spec, which can tell: a live run holds a session lock keyed by its id.
ALTER TABLE etl_runs DROP CONSTRAINT IF EXISTS etl_runs_status_check;
ALTER TABLE etl_runs ADD CONSTRAINT etl_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'rejected', 'over_budget', 'refused', 'failed', 'abandoned'));
