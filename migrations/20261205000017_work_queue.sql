-- The work queue of `etl run --distribute`: a row per file of a set stage with `atomicity: file`
-- that the run leaves to workers (`etl worker`, and the run itself) to load. A worker claims a row
-- (FOR UPDATE SKIP LOCKED) with a lease it renews while it loads; the row turns `done` in the
-- file's own transaction, with the file's rows and ledger row, so a file is done exactly when it
-- is loaded. A row whose lease ran out (its worker died) is claimed again.
CREATE TABLE IF NOT EXISTS etl_queue (
    id             BIGINT      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id         BIGINT      NOT NULL,
    spec_name      TEXT        NOT NULL,
    stage          TEXT        NOT NULL,
    business_date  DATE        NOT NULL,
    file_key       TEXT        NOT NULL,
    state          TEXT        NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed')),
    worker         TEXT,
    lease_until    TIMESTAMPTZ,
    attempts       INT         NOT NULL DEFAULT 0,
    status         TEXT,
    rows_read      BIGINT,
    rows_inserted  BIGINT,
    rows_updated   BIGINT,
    rows_unchanged BIGINT,
    rows_rejected  BIGINT,
    error          TEXT,
    enqueued_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at    TIMESTAMPTZ,
    UNIQUE (run_id, stage, file_key)
);
CREATE INDEX IF NOT EXISTS etl_queue_waiting ON etl_queue (spec_name, state, id);
