-- The digest of each load's rejects: a later run carries a load's outcomes over (an unchanged
-- stage skipped, unchanged lines not read again) only when etl_rejects still holds exactly those
-- rejects. An operator who deletes or truncates them makes the next run check every line.
ALTER TABLE etl_run_stages ADD COLUMN IF NOT EXISTS rejects_digest TEXT;
