-- Each run's business date (`run.date`: `--date`, today in the spec's time zone, or a firing's
-- date), for backfills and for "did the 19th load".
ALTER TABLE etl_runs ADD COLUMN IF NOT EXISTS business_date DATE;
