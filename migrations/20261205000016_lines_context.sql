-- A history stage's lines context (the digest of the stage compiled for a fixed date: only its
-- `as_of` value and its merge depend on the date) and the business date its load was of. A load
-- of a later date whose lines context is the same, into a table as that load left it, reads only
-- the lines of its file that changed since.
ALTER TABLE etl_run_stages
    ADD COLUMN IF NOT EXISTS lines_context TEXT,
    ADD COLUMN IF NOT EXISTS as_of DATE;
