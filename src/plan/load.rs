//! The target SQL of a stage: the table, its key, indexes and foreign keys (so a new dataset
//! needs only YAML), and the statements that stage a batch and merge it into the table.

use crate::spec::model::{ColumnType, LoadMode};

use super::compiled::{ColumnPlan, Dialect, DistributionPlan, ForeignKey, LoadSql, MergeStep, TargetPlan};
use super::sql::{FileSql, ident};

/// The staging table's name.
pub fn staging_table(t: &TargetPlan) -> String {
    format!("_etl_stage_{}", t.table)
}

/// The SQL type of a column in a dialect.
pub fn sql_type(c: &ColumnPlan, dialect: Dialect) -> String {
    match (c.ty, dialect) {
        (ColumnType::String, _) => match c.max_length {
            Some(n) => format!("VARCHAR({n})"),
            None => "TEXT".into(),
        },
        (ColumnType::Int32, _) => "INTEGER".into(),
        (ColumnType::Int64, _) => "BIGINT".into(),
        (ColumnType::Decimal { precision, scale }, _) => format!("NUMERIC({precision},{scale})"),
        (ColumnType::Float64, Dialect::Postgres) => "DOUBLE PRECISION".into(),
        (ColumnType::Float64, Dialect::Duckdb) => "DOUBLE".into(),
        (ColumnType::Bool, _) => "BOOLEAN".into(),
        (ColumnType::Date, _) => "DATE".into(),
        (ColumnType::Timestamp, _) => "TIMESTAMP".into(),
    }
}

fn constraint_name(table: &str, cols: &[String], suffix: &str) -> String {
    let mut n = format!("{table}_{}_{suffix}", cols.join("_"));
    if n.len() > 63 {
        n.truncate(63);
    }
    n
}

/// The key columns and the rest, quoted.
fn key_and_rest(t: &TargetPlan, columns: &[ColumnPlan]) -> (Vec<String>, Vec<String>) {
    let keys = t.key.iter().map(|k| ident(k)).collect();
    let rest = columns.iter().filter(|c| !t.key.contains(&c.name)).map(|c| ident(&c.name)).collect();
    (keys, rest)
}

/// `a IS DISTINCT FROM b` over the non-key columns of two row aliases.
fn differs(rest: &[String], old: &str, new: &str) -> String {
    let side = |alias: &str| {
        let cols: Vec<String> = rest.iter().map(|c| format!("{alias}.{c}")).collect();
        if cols.len() == 1 { cols.join("") } else { format!("ROW({})", cols.join(", ")) }
    };
    format!("{} IS DISTINCT FROM {}", side(old), side(new))
}

/// PostgreSQL's upsert: changed rows updated, new keys inserted in key order, in one statement
/// that yields (rows inserted, rows written, rows updated, the sum of a hash of the `xmin` each
/// updated row had before: what [`super::postgres::upserted_state_sql`] tells the table's state
/// after it from, without a scan). Its statements share one snapshot, so `old` reads the
/// versions the update replaces. Not `INSERT .. ON CONFLICT`: that draws an identity
/// value for every staged row, conflicting or not, so the surrogate ids a load hands out would
/// depend on how many unchanged rows it happened to stage (a forced load, a changed-lines load).
/// Under the stage's SHARE ROW EXCLUSIVE lock no other writer can add a key between the two.
fn postgres_upsert(t: &TargetPlan, columns: &[ColumnPlan], table: &str, staging: &str, list: &str) -> String {
    if t.distribution.is_some() {
        return citus_upsert(t, columns, table, staging, list);
    }
    let (keys, rest) = key_and_rest(t, columns);
    let on: Vec<String> = keys.iter().map(|k| format!("t.{k} = s.{k}")).collect();
    let on = on.join(" AND ");
    let order: Vec<String> = keys.iter().map(|k| format!("s.{k}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({list})\nSELECT {list} FROM {staging} AS s\nWHERE NOT EXISTS (SELECT 1 FROM {table} AS t WHERE {on})\nORDER BY {}\nRETURNING 1",
        order.join(", ")
    );
    if rest.is_empty() {
        return format!("WITH inserted AS (\n{insert}\n)\nSELECT count(*), count(*), 0::bigint, '0' FROM inserted");
    }
    let set: Vec<String> = rest.iter().map(|c| format!("{c} = s.{c}")).collect();
    let update = format!(
        "UPDATE {table} AS t SET\n  {}\nFROM {staging} AS s\nWHERE {on} AND {}\nRETURNING 1",
        set.join(",\n  "),
        differs(&rest, "t", "s")
    );
    let old = format!(
        "SELECT t.xmin::text::bigint AS x FROM {table} AS t JOIN {staging} AS s ON {on} WHERE {}",
        differs(&rest, "t", "s")
    );
    format!(
        "WITH old AS (\n{old}\n), updated AS (\n{update}\n), inserted AS (\n{insert}\n)\nSELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM inserted) + (SELECT count(*) FROM updated), \
         (SELECT count(*) FROM old), (SELECT coalesce(sum(hashint8extended(x, 0)), 0)::text FROM old)"
    )
}

/// The upsert into a Citus table: as [`postgres_upsert`], but Citus joins its tables with the
/// coordinator's staging table only through a result it computes first, so the staged rows are
/// read once into a CTE (`s`), and the keys the table holds among them into another (`held`).
/// The versions it replaced are not reported (0): a Citus table's state is read after the
/// load, never told.
fn citus_upsert(t: &TargetPlan, columns: &[ColumnPlan], table: &str, staging: &str, list: &str) -> String {
    let (keys, rest) = key_and_rest(t, columns);
    let key_list = keys.join(", ");
    let order: Vec<String> = keys.iter().map(|k| format!("s.{k}")).collect();
    let matched = |a: &str| keys.iter().map(|k| format!("{a}.{k} = s.{k}")).collect::<Vec<_>>().join(" AND ");
    let ctes = format!(
        "WITH s AS MATERIALIZED (\nSELECT {list} FROM {staging}\n), held AS MATERIALIZED (\nSELECT {key_list} FROM {table} WHERE ({key_list}) IN (SELECT {key_list} FROM s)\n)"
    );
    let insert = format!(
        "INSERT INTO {table} ({list})\nSELECT {list} FROM s\nWHERE NOT EXISTS (SELECT 1 FROM held AS h WHERE {})\nORDER BY {}\nRETURNING 1",
        matched("h"),
        order.join(", ")
    );
    if rest.is_empty() {
        return format!("{ctes}, inserted AS (\n{insert}\n)\nSELECT count(*), count(*), 0::bigint, '0' FROM inserted");
    }
    let set: Vec<String> = rest.iter().map(|c| format!("{c} = s.{c}")).collect();
    format!(
        "{ctes}, updated AS (\nUPDATE {table} AS t SET\n  {}\nFROM s\nWHERE {} AND {}\nRETURNING 1\n), inserted AS (\n{insert}\n)\n\
         SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM inserted) + (SELECT count(*) FROM updated), 0::bigint, '0'",
        set.join(",\n  "),
        matched("t"),
        differs(&rest, "t", "s")
    )
}

/// DuckDB's upsert: `INSERT .. ON CONFLICT`, changed rows only.
fn duckdb_upsert(t: &TargetPlan, columns: &[ColumnPlan], insert: &str) -> String {
    let (keys, rest) = key_and_rest(t, columns);
    let conflict = format!("ON CONFLICT ({})", keys.join(", "));
    if rest.is_empty() {
        return format!("{insert}\n{conflict} DO NOTHING");
    }
    let set: Vec<String> = rest.iter().map(|c| format!("{c} = EXCLUDED.{c}")).collect();
    format!("{insert}\n{conflict} DO UPDATE SET\n  {}\nWHERE {}", set.join(",\n  "), differs(&rest, "t", "EXCLUDED"))
}

/// A history table's view of its current versions.
pub fn current_view(t: &TargetPlan) -> String {
    super::sql::qualified(t.schema.as_deref(), &format!("{}_current", t.table))
}

/// The table of the business dates each history table was loaded for (a migration creates it).
pub const AS_OF_DATES: &str = "etl_as_of_dates";

/// A history load of date D: the versions of the keys whose state on D changes (values differ,
/// the key is new, or, closing, the file lacks it) are rewritten on [D, N), N the next date
/// loaded after D (none: open-ended), and merged with their neighbours where the values are the
/// same, so the table is what loading every date in order gives; every other key's versions are
/// untouched. The date is then recorded as loaded.
///
/// With `lines` (only the file's changed lines staged, see `incremental`): the state on D is read
/// for the staged keys and the vanished ones only (the last file's keys that no line of this
/// file holds, in `vanished_table`), and a key is closed when it vanished and no changed line
/// holds it; the keys of the unchanged lines are current with the values those lines give.
fn history_merge(t: &TargetPlan, h: &super::compiled::HistoryPlan, columns: &[ColumnPlan], table: &str, staging: &str, lines: bool) -> Vec<MergeStep> {
    if t.key.is_empty() {
        return Vec::new();
    }
    let d = format!("{}::date", super::sql::literal(&h.date));
    let target = super::sql::literal(table);
    let n = format!("(SELECT min(as_of) FROM {AS_OF_DATES} WHERE target_table = {target} AND as_of > {d})");
    let (from, to) = (ident(&h.valid_from), ident(&h.valid_to));
    let keys: Vec<String> = t.key.iter().map(|k| ident(k)).collect();
    let values: Vec<String> = columns.iter().filter(|c| c.name != h.as_of && !t.key.contains(&c.name)).map(|c| ident(&c.name)).collect();
    let on = |a: &str, b: &str| keys.iter().map(|k| format!("{a}.{k} = {b}.{k}")).collect::<Vec<_>>().join(" AND ");
    let row = |alias: &str| {
        let cols: Vec<String> = values.iter().map(|v| format!("{alias}.{v}")).collect();
        format!("ROW({})", cols.join(", "))
    };
    let at = ident("_etl_history_at");
    let changed = ident("_etl_history_changed");
    let old = ident("_etl_history_old");
    let key_list = keys.join(", ");
    let all: Vec<String> = keys.iter().chain(&values).cloned().collect();
    let all_list = all.join(", ");
    let vanished = ident(&super::postgres::vanished_table(t));
    let closing = if h.close {
        let k = ident(&super::postgres::keys_table(t));
        let gone = if lines { format!("EXISTS (SELECT 1 FROM {vanished} AS v WHERE {}) AND ", on("v", "a")) } else { String::new() };
        format!(
            "\nUNION\nSELECT {} FROM {at} AS a WHERE {gone}NOT EXISTS (SELECT 1 FROM {k} AS k WHERE {})",
            keys.iter().map(|k| format!("a.{k}")).collect::<Vec<_>>().join(", "),
            on("k", "a")
        )
    } else {
        String::new()
    };
    let covering = format!("{from} <= {d} AND ({to} IS NULL OR {to} > {d})");
    // The state on D of all keys, or (`lines`) of the staged and vanished ones.
    let read_keys = if lines {
        let vanished_keys = if h.close { format!(" UNION SELECT {key_list} FROM {vanished}") } else { String::new() };
        format!(" AND ({key_list}) IN (SELECT {key_list} FROM {staging}{vanished_keys})")
    } else {
        String::new()
    };
    // The changed keys' versions, with where they are (the delete goes straight to them; the
    // table is locked against other writers: they stay where they are meanwhile) and which
    // transaction wrote each (the table's state after the merge is told from them).
    // On Citus a row's `ctid` is its place in one shard only, and a distributed table is not
    // joined with the coordinator's temporary tables directly: the versions are found by their
    // keys through an uncorrelated IN and deleted by key and start (the table's primary key),
    // and the state after is read, not told.
    let (take_old, delete_old) = if t.distribution.is_some() {
        (
            format!("SELECT {all_list}, {from}, {to} FROM {table} WHERE ({key_list}) IN (SELECT {key_list} FROM {changed})"),
            format!("DELETE FROM {table} WHERE ({key_list}, {from}) IN (SELECT {key_list}, {from} FROM {old})"),
        )
    } else {
        (
            format!(
                "SELECT {all_list}, {from}, {to}, ctid AS _etl_ctid, xmin::text::bigint AS _etl_xmin FROM {table} AS t WHERE EXISTS (SELECT 1 FROM {changed} AS c WHERE {})",
                on("c", "t")
            ),
            format!("DELETE FROM {table} WHERE ctid = ANY (ARRAY(SELECT _etl_ctid FROM {old}))"),
        )
    };
    let same_as_last: Vec<String> = std::iter::once(format!("lag({to}) OVER w = {from}"))
        .chain(values.iter().map(|v| format!("lag({v}) OVER w IS NOT DISTINCT FROM {v}")))
        .collect();
    let mut steps: Vec<MergeStep> = Vec::new();
    steps.extend([
        // The state on D: the versions covering it.
        MergeStep::Run(format!("CREATE TEMP TABLE {at} ON COMMIT DROP AS SELECT {all_list} FROM {table} WHERE {covering}{read_keys}")),
        // The keys whose state on D changes.
        MergeStep::Run(format!(
            "CREATE TEMP TABLE {changed} ON COMMIT DROP AS\nSELECT {} FROM {staging} AS s LEFT JOIN {at} AS a ON {} WHERE a.{} IS NULL OR {} IS DISTINCT FROM {}{closing}",
            keys.iter().map(|k| format!("s.{k}")).collect::<Vec<_>>().join(", "),
            on("a", "s"),
            keys[0],
            row("a"),
            row("s"),
        )),
    ]);
    steps.extend([
        MergeStep::Versions(format!(
            "SELECT (SELECT count(*) FROM {changed} AS c WHERE EXISTS (SELECT 1 FROM {staging} AS s WHERE {})), \
             (SELECT count(*) FROM {changed} AS c WHERE EXISTS (SELECT 1 FROM {at} AS a WHERE {}))",
            on("s", "c"),
            on("a", "c")
        )),
        // Their versions, taken out of the table.
        MergeStep::Run(format!("CREATE TEMP TABLE {old} ON COMMIT DROP AS {take_old}")),
        MergeStep::Delete(delete_old),
        // Put back: their versions before D and from N on, the file's state on [D, N), merged.
        MergeStep::Insert(format!(
            "INSERT INTO {table} ({all_list}, {from}, {to})\n\
             WITH pieces AS (\n\
               SELECT {all_list}, {from}, CASE WHEN {to} IS NULL OR {to} > {d} THEN {d} ELSE {to} END AS {to} FROM {old} WHERE {from} < {d}\n\
               UNION ALL\n\
               SELECT {all_list}, greatest({from}, {n}), {to} FROM {old} WHERE {n} IS NOT NULL AND ({to} IS NULL OR {to} > {n})\n\
               UNION ALL\n\
               SELECT {}, {d}, {n} FROM {staging} AS s WHERE EXISTS (SELECT 1 FROM {changed} AS c WHERE {})\n\
             ), marked AS (\n\
               SELECT *, CASE WHEN {} THEN 0 ELSE 1 END AS starts FROM pieces WINDOW w AS (PARTITION BY {key_list} ORDER BY {from})\n\
             ), grouped AS (\n\
               SELECT *, sum(starts) OVER (PARTITION BY {key_list} ORDER BY {from}) AS version FROM marked\n\
             )\n\
             SELECT {all_list}, min({from}), CASE WHEN bool_or({to} IS NULL) THEN NULL ELSE max({to}) END FROM grouped GROUP BY {key_list}, version{}",
            all.iter().map(|c| format!("s.{c}")).collect::<Vec<_>>().join(", "),
            on("c", "s"),
            same_as_last.join(" AND "),
            values.iter().map(|v| format!(", {v}")).collect::<String>(),
        )),
        MergeStep::Run(format!(
            "INSERT INTO {AS_OF_DATES} (target_table, as_of) VALUES ({target}, {d}) ON CONFLICT (target_table, as_of) DO UPDATE SET loaded_at = now()"
        )),
    ]);
    steps
}

/// A snapshot's delete: the table's rows of every date among the staged rows, and of the
/// `as_of` constant when it is one (so an empty restated file, where `allow_empty` lets it
/// load, empties its date).
fn delete_dates(t: &TargetPlan, columns: &[ColumnPlan], table: &str, staging: &str) -> String {
    let Some(as_of) = &t.as_of else { return format!("DELETE FROM {table} WHERE false") };
    let d = ident(as_of);
    let constant = columns.iter().find(|c| &c.name == as_of).and_then(|c| match &c.source {
        super::compiled::ColumnSource::Value(v) => Some(format!(" OR {d} = {}", super::sql::literal(v))),
        _ => None,
    });
    format!("DELETE FROM {table} WHERE {d} IN (SELECT DISTINCT {d} FROM {staging}){}", constant.unwrap_or_default())
}

/// Compiles a target's SQL.
pub fn compile(t: &TargetPlan, columns: &[ColumnPlan]) -> LoadSql {
    let table = t.qualified.clone();
    let mut defs: Vec<String> = Vec::new();
    let mut create_table = Vec::new();
    if let Some(sk) = &t.surrogate_key {
        match t.dialect {
            Dialect::Postgres => defs.push(format!("{} BIGINT GENERATED ALWAYS AS IDENTITY", ident(sk))),
            Dialect::Duckdb => {
                let seq = format!("{}_{}_seq", t.table, sk);
                create_table.push(format!("CREATE SEQUENCE IF NOT EXISTS {}", ident(&seq)));
                defs.push(format!("{} BIGINT PRIMARY KEY DEFAULT nextval('{}')", ident(sk), seq.replace('\'', "''")));
            }
        }
    }
    let history = t.history.as_ref();
    for c in columns.iter().filter(|c| history.is_none_or(|h| h.as_of != c.name)) {
        let null = if c.nullable { "" } else { " NOT NULL" };
        defs.push(format!("{} {}{null}", ident(&c.name), sql_type(c, t.dialect)));
    }
    if let Some(h) = history {
        defs.push(format!("{} DATE NOT NULL", ident(&h.valid_from)));
        defs.push(format!("{} DATE", ident(&h.valid_to)));
    }
    if t.flags_deleted() {
        defs.push(format!("{} DATE", ident(crate::spec::model::DELETED_AT)));
    }
    let mut keys: Vec<String> = Vec::new();
    if let Some(sk) = &t.surrogate_key
        && t.dialect == Dialect::Postgres
    {
        // Citus keeps a key unique within a shard only: a distributed table's includes the
        // column its rows are spread by.
        let mut cols = vec![ident(sk)];
        if let Some(DistributionPlan::Hash { column, .. }) = &t.distribution {
            cols.push(ident(column));
        }
        let pkey = format!("CONSTRAINT {} PRIMARY KEY ({})", ident(&constraint_name(&t.table, std::slice::from_ref(sk), "pkey")), cols.join(", "));
        // The identity's values never repeat, so its key cannot fail the first load's COPY:
        // declared with the table, it is kept as the rows arrive, on the server's share of a
        // COPY that waits on the client, instead of built after. (On Citus, added after.)
        if t.distribution.is_none() { defs.push(pkey) } else { keys.push(pkey) }
    }
    if !t.key.is_empty() {
        // A history table's key is unique per version: with the date it starts on.
        let key: Vec<String> = t.key.iter().cloned().chain(history.map(|h| h.valid_from.clone())).collect();
        let cols: Vec<String> = key.iter().map(|k| ident(k)).collect();
        let kind = if t.surrogate_key.is_some() { "UNIQUE" } else { "PRIMARY KEY" };
        let suffix = if t.surrogate_key.is_some() { "key" } else { "pkey" };
        keys.push(format!(
            "CONSTRAINT {} {kind} ({})",
            ident(&constraint_name(&t.table, &key, suffix)),
            cols.join(", ")
        ));
    }
    for c in columns.iter().filter(|c| c.unique && !(t.key.len() == 1 && t.key[0] == c.name)) {
        keys.push(format!(
            "CONSTRAINT {} UNIQUE ({})",
            ident(&constraint_name(&t.table, std::slice::from_ref(&c.name), "key")),
            ident(&c.name)
        ));
    }
    let constraints = match t.dialect {
        Dialect::Postgres => keys.iter().map(|k| format!("ALTER TABLE {table} ADD {k}")).collect(),
        Dialect::Duckdb => {
            defs.append(&mut keys);
            Vec::new()
        }
    };
    let mut foreign_keys = Vec::new();
    for c in columns {
        let Some((rtable, rcol)) = &c.references else { continue };
        let name = constraint_name(&t.table, std::slice::from_ref(&c.name), "fkey");
        let rq = super::sql::qualified(t.schema.as_deref(), rtable);
        let clause = format!("CONSTRAINT {} FOREIGN KEY ({}) REFERENCES {rq} ({})", ident(&name), ident(&c.name), ident(rcol));
        let sql = match t.dialect {
            Dialect::Postgres => format!("ALTER TABLE {table} ADD {clause}"),
            // DuckDB declares foreign keys only in CREATE TABLE.
            Dialect::Duckdb => {
                defs.push(clause.clone());
                String::new()
            }
        };
        foreign_keys.push(ForeignKey { name, column: c.name.clone(), table: rtable.clone(), ref_column: rcol.clone(), sql });
    }
    create_table.push(format!("CREATE TABLE IF NOT EXISTS {table} (\n  {}\n)", defs.join(",\n  ")));
    // Spread over a Citus cluster while still empty (the statements run only when the table is
    // created).
    match &t.distribution {
        Some(DistributionPlan::Reference) => create_table.push(format!("SELECT create_reference_table({})", super::sql::literal(&table))),
        Some(DistributionPlan::Hash { column, colocate_with, shard_count }) => create_table.push(format!(
            "SELECT create_distributed_table({}, {}{}{})",
            super::sql::literal(&table),
            super::sql::literal(column),
            colocate_with.as_ref().map(|c| format!(", colocate_with => {}", super::sql::literal(c))).unwrap_or_default(),
            shard_count.map(|n| format!(", shard_count => {n}")).unwrap_or_default(),
        )),
        None => {}
    }
    if let Some(h) = history {
        let shown: Vec<String> = columns.iter().filter(|c| c.name != h.as_of).map(|c| ident(&c.name)).collect();
        create_table.push(format!(
            "CREATE OR REPLACE VIEW {} AS SELECT {}, {} FROM {table} WHERE {} IS NULL",
            current_view(t),
            shown.join(", "),
            ident(&h.valid_from),
            ident(&h.valid_to)
        ));
    }
    let create_indexes = columns
        .iter()
        .filter(|c| c.index)
        .map(|c| {
            let name = constraint_name(&t.table, std::slice::from_ref(&c.name), "idx");
            format!("CREATE INDEX IF NOT EXISTS {} ON {table} ({})", ident(&name), ident(&c.name))
        })
        .collect();

    let names: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
    let list = names.join(", ");
    let staging = ident(&staging_table(t));
    let typed_columns: Vec<String> = columns.iter().map(|c| format!("{} {}", ident(&c.name), sql_type(c, t.dialect))).collect();
    let create_staging = match t.dialect {
        // Typed by the spec, as the binary COPY writes the rows (an existing table's columns may
        // be of wider types, cast as the merge writes them; a history table lacks the `as_of`
        // column its staged rows carry).
        Dialect::Postgres => format!("CREATE TEMP TABLE {staging} ({}) ON COMMIT DROP", typed_columns.join(", ")),
        Dialect::Duckdb => format!("CREATE OR REPLACE TEMP TABLE {staging} AS SELECT {list} FROM {table} LIMIT 0"),
    };
    let (copy, copy_file, copy_direct, copy_frozen) = match t.dialect {
        Dialect::Postgres => (
            format!("COPY {staging} ({list}) FROM STDIN (FORMAT binary)"),
            None,
            format!("COPY {table} ({list}) FROM STDIN (FORMAT binary)"),
            format!("COPY {table} ({list}) FROM STDIN (FORMAT binary, FREEZE)"),
        ),
        Dialect::Duckdb => (
            String::new(),
            // The batch's dialect said, never sniffed: a batch whose text holds a CR or CRLF
            // inside quotes made DuckDB's sniffer give up ("not possible to automatically detect").
            Some(FileSql::new(
                format!("COPY {staging} FROM "),
                format!(
                    " (FORMAT csv, HEADER false, DELIMITER ',', QUOTE '\"', ESCAPE '\"', NEW_LINE '\\n', AUTO_DETECT false, ALLOW_QUOTED_NULLS false, MAX_LINE_SIZE {}, BUFFER_SIZE {})",
                    super::sql::LINE_LIMIT,
                    super::sql::BUFFER_SIZE
                ),
            )),
            String::new(),
            String::new(),
        ),
    };
    let insert = format!("INSERT INTO {table} AS t ({list})\nSELECT {list} FROM {staging}");
    let merge = match t.mode {
        LoadMode::Append => vec![MergeStep::Insert(insert)],
        // Row by row on the key (the keys the file lacks are deleted after: see `delete_missing`).
        LoadMode::Replace if t.delete_missing.is_some() => vec![MergeStep::Upsert(postgres_upsert(t, columns, &table, &staging, &list))],
        LoadMode::Replace => vec![MergeStep::Delete(format!("DELETE FROM {table}")), MergeStep::Insert(insert)],
        LoadMode::Snapshot => vec![MergeStep::Delete(delete_dates(t, columns, &table, &staging)), MergeStep::Insert(insert)],
        LoadMode::History => match history {
            Some(h) => history_merge(t, h, columns, &table, &staging, false),
            None => Vec::new(),
        },
        LoadMode::Upsert => match t.dialect {
            Dialect::Postgres => vec![MergeStep::Upsert(postgres_upsert(t, columns, &table, &staging, &list))],
            Dialect::Duckdb => vec![MergeStep::Upsert(duckdb_upsert(t, columns, &insert))],
        },
    };
    let count_existing = (t.dialect == Dialect::Duckdb && t.mode == LoadMode::Upsert && !t.key.is_empty()).then(|| {
        let on: Vec<String> = t.key.iter().map(|k| format!("r.{0} = s.{0}", ident(k))).collect();
        format!("SELECT count(*) FROM {staging} AS s WHERE EXISTS (SELECT 1 FROM {} AS r WHERE {})", ident(&t.table), on.join(" AND "))
    });
    let history_lines = match history {
        Some(h) if t.mode == LoadMode::History => history_merge(t, h, columns, &table, &staging, true),
        _ => Vec::new(),
    };
    let forget_dates = (t.mode == LoadMode::History && history.is_some())
        .then(|| format!("DELETE FROM {AS_OF_DATES} WHERE target_table = {}", super::sql::literal(&table)));
    LoadSql {
        forget_dates,
        create_table,
        constraints,
        create_indexes,
        foreign_keys,
        create_staging,
        copy,
        copy_file,
        copy_direct,
        copy_frozen,
        uncopy_created: format!("TRUNCATE {table}"),
        uncopy_staged: format!("TRUNCATE {staging}"),
        count_existing,
        merge,
        history_lines,
        drop_staging: format!("DROP TABLE IF EXISTS {staging}"),
    }
}
