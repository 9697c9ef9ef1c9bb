-- What a stage's outcome depended on, so that a run can tell a stage unchanged since its last
-- load and skip it: the stage's context (the compiled stage and the states of the tables it
-- references), its source (an S3 object's ETag and size, a local file's SHA-256), and the state
-- of its table right after the load (row count and a digest of the rows' xmin). A skipped stage
-- names the run whose load it reused.
ALTER TABLE etl_run_stages
    ADD COLUMN IF NOT EXISTS target_table        TEXT,
    ADD COLUMN IF NOT EXISTS context_fingerprint TEXT,
    ADD COLUMN IF NOT EXISTS source_fingerprint  TEXT,
    ADD COLUMN IF NOT EXISTS table_state         TEXT,
    ADD COLUMN IF NOT EXISTS unchanged_since     BIGINT;

CREATE INDEX IF NOT EXISTS etl_run_stages_last_load ON etl_run_stages (stage, target_table, finished_at);
