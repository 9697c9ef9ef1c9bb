-- Schedules make up firings missed while no scheduler ran (`catchup`: skip, latest, all, at most
-- `max_catchup`), counted from the job's last firing or from `since` (when its trigger was set or
-- it was resumed), and retry a firing that ended with exit 3 (`retries`, the first after
-- `retry_delay_secs`, doubling). Each firing records its business date, whether it was made up,
-- and how many attempts it took.
ALTER TABLE etl_schedules
    ADD COLUMN IF NOT EXISTS catchup          TEXT        NOT NULL DEFAULT 'skip' CHECK (catchup IN ('skip', 'latest', 'all')),
    ADD COLUMN IF NOT EXISTS max_catchup      INTEGER     NOT NULL DEFAULT 10 CHECK (max_catchup > 0),
    ADD COLUMN IF NOT EXISTS retries          INTEGER     NOT NULL DEFAULT 0 CHECK (retries >= 0),
    ADD COLUMN IF NOT EXISTS retry_delay_secs BIGINT      NOT NULL DEFAULT 300 CHECK (retry_delay_secs > 0),
    ADD COLUMN IF NOT EXISTS since            TIMESTAMPTZ NOT NULL DEFAULT now();

ALTER TABLE etl_schedule_firings
    ADD COLUMN IF NOT EXISTS business_date DATE,
    ADD COLUMN IF NOT EXISTS made_up       BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS attempts      INTEGER NOT NULL DEFAULT 1;

-- A run (and a firing) that found no file of a set it needs is `missing`, or `late` when it
-- waited for one until its `wait.until`.
ALTER TABLE etl_runs DROP CONSTRAINT IF EXISTS etl_runs_status_check;
ALTER TABLE etl_runs ADD CONSTRAINT etl_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'rejected', 'over_budget', 'refused', 'failed', 'abandoned', 'missing', 'late'));
ALTER TABLE etl_schedule_firings DROP CONSTRAINT IF EXISTS etl_schedule_firings_status_check;
ALTER TABLE etl_schedule_firings ADD CONSTRAINT etl_schedule_firings_status_check
    CHECK (status IN ('running', 'succeeded', 'rejected', 'over_budget', 'refused', 'failed', 'skipped', 'missing', 'late'));
