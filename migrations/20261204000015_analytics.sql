-- Each analytic's result of a run, with the digest of what it read (its SQL and the states of its
-- tables): a later run whose digest is the same reports this result instead of querying again.
CREATE TABLE IF NOT EXISTS etl_analytics (
    run_id       BIGINT NOT NULL REFERENCES etl_runs (run_id) ON DELETE CASCADE,
    analytic     TEXT   NOT NULL,
    digest       TEXT   NOT NULL,
    result       JSONB  NOT NULL,
    reused_from  BIGINT,
    PRIMARY KEY (run_id, analytic)
);

CREATE INDEX IF NOT EXISTS etl_analytics_digest ON etl_analytics (analytic, digest);
