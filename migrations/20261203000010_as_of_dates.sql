-- The business dates each history table (`mode: history`) was loaded for: a past date loaded
-- again rewrites its keys' versions up to the next date loaded. Written in the stage's
-- transaction, with the versions.
CREATE TABLE IF NOT EXISTS etl_as_of_dates (
  target_table TEXT NOT NULL,
  as_of DATE NOT NULL,
  loaded_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (target_table, as_of)
);
