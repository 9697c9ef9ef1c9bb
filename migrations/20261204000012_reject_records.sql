-- A rejected row's fields as read (each file column's text by its CSV header), kept with its
-- rejects so that it can be loaded again once it passes.
ALTER TABLE etl_rejects ADD COLUMN IF NOT EXISTS record JSONB;
