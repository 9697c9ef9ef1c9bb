-- A webhook (`notify:`) that still failed after its retries, recorded with the run it was to tell
-- of (the run's own status is not changed by it).
ALTER TABLE etl_runs ADD COLUMN IF NOT EXISTS notify_error TEXT;
