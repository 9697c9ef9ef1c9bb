//! etl: declarative YAML-spec batch ETL.
