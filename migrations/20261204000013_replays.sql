-- `etl rejects replay`: a replayed row's rejects name the replay's run (`replayed_by`), and a
-- replay's stage record names the run whose rejects it replayed (`replay_of`): a replay is not a
-- load of a file, so it is never reused, nor counted as the stage's last load.
ALTER TABLE etl_rejects ADD COLUMN IF NOT EXISTS replayed_by BIGINT;
ALTER TABLE etl_run_stages ADD COLUMN IF NOT EXISTS replay_of BIGINT;
