-- The file ledger: every file of a stage's file set (`source.files`) that a run loaded, with where
-- it came from and what its content was (SHA-256 of the stored bytes, computed as it was copied).
-- Written in the stage's own transaction, with its rows: a file is in the ledger exactly when its
-- rows are in the table. `select: new` loads only files whose (key, digest) is not here yet.
CREATE TABLE IF NOT EXISTS etl_files (
    run_id         BIGINT      NOT NULL,
    spec_name      TEXT        NOT NULL,
    stage          TEXT        NOT NULL,
    target_table   TEXT        NOT NULL,
    origin         TEXT        NOT NULL,
    file_key       TEXT        NOT NULL,
    bytes          BIGINT      NOT NULL,
    etag           TEXT,
    digest         TEXT        NOT NULL,
    rows_read      BIGINT      NOT NULL,
    rows_loaded    BIGINT      NOT NULL,
    rows_rejected  BIGINT      NOT NULL,
    status         TEXT        NOT NULL CHECK (status IN ('loaded')),
    loaded_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (spec_name, stage, target_table, origin, file_key, digest, run_id)
);
