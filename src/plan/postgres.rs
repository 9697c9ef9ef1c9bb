//! The statements a PostgreSQL stage sends around its DDL and load, in the order a run sends
//! them: the transaction's settings and locks, the catalog reads that check an existing table,
//! the probes and states that decide whether the last load can be reused, the lookups exported
//! for the extract to join, and the table's state after the load.

use crate::spec::model::{LoadMode, OnDelete};

use super::compiled::{ColumnPlan, CurrentLookup, Guarded, Lookup, Lookups, MissingSql, PgStatements, ReferenceLookup, Referenced, Referencing, TargetPlan, Vanished};
use super::extract::{lookup_create, lookup_fill};
use super::sql::{Bind, Query, ident};

/// Whether a table exists (`$1`: its quoted, qualified name).
pub const TABLE_EXISTS: &str = "SELECT to_regclass($1)::text";

/// A table's size on disk in bytes, its TOAST included (0 for a Citus table's shell on the
/// coordinator, whose rows are on the workers).
pub const TABLE_SIZE: &str = "SELECT coalesce(pg_table_size(to_regclass($1)), 0)";

/// The current transaction's id as a row's `xmin` shows it (its low 32 bits).
pub const CURRENT_XID: &str = "SELECT txid_current() % 4294967296";

/// SQL giving a table's state as one text, `count:sum(h(xmin)):max(xmin):definition`: the row
/// count; the sum (exact, as numeric) of a 64-bit hash of each row's `xmin`, the transaction that
/// wrote its version; the largest `xmin`; and an MD5 of the table's definition as the catalog
/// holds it (each column's number, name, type, nullability, default and the value rows written
/// before it was added show, every constraint, every index, and the heap's file). A committed
/// insert, update or delete gives the rows it writes its own transaction's `xmin`, so it changes
/// the multiset of `xmin`s and with it the hash sum (two different multisets with the same sum
/// would need 64-bit hash values that cancel, of transaction ids nobody picks); a change with no
/// new row version (a column dropped and added with a default, a constraint or index dropped)
/// changes the definition; a TRUNCATE, VACUUM FULL or rewrite changes the heap's file.
///
/// The rows are counted per `xmin` first, and each `xmin` (as text, the one way PostgreSQL turns
/// one into a number) hashed once per count, not once per row: a table's rows come from a few
/// loads (the 1M trades' state: 77-84 ms so, 142-241 ms row by row). The sums are the same
/// numbers: n equal hashes sum to n times the hash. They are aggregated in a subquery of their
/// own, so that Citus, which cannot push a catalog subquery down to a distributed table's shards,
/// counts the shards' rows and adds the definition on the coordinator.
pub fn state_sql(qualified: &str) -> String {
    format!(
        "SELECT s.n::text || ':' || s.h::text || ':' || s.m::text || ':' || ({}) \
         FROM (SELECT coalesce(sum(g.n), 0) AS n, coalesce(sum(g.n::numeric * hashint8extended(g.x::text::bigint, 0)), 0) AS h, coalesce(max(g.x::text::bigint), 0) AS m \
         FROM (SELECT xmin AS x, count(*) AS n FROM {qualified} GROUP BY xmin) AS g) AS s",
        definition_sql(qualified)
    )
}

/// The state [`state_sql`] finds in a table that holds only the `$1` rows transaction `$2` (as
/// `xmin` shows it) inserted, without reading them (a load into an empty or new table).
pub fn fresh_state_sql(qualified: &str) -> String {
    format!(
        "SELECT $1::bigint::text || ':' || ($1::bigint::numeric * hashint8extended($2::bigint, 0))::text || ':' || (CASE WHEN $1::bigint = 0 THEN 0 ELSE $2::bigint END)::text || ':' || ({})",
        definition_sql(qualified)
    )
}

/// A table's state after a merge, told from its state before (`$1`, read under the stage's
/// lock), the `$2` rows the merge wrote as transaction `$3`, and the `n` versions it took out
/// whose `xmin`s' hashes sum to `s`: null when that cannot be told without a scan (this
/// transaction's id below the newest `xmin` before, after a wraparound).
fn told_state_sql(qualified: &str, n: &str, s: &str) -> String {
    let part = |i: u8| format!("split_part($1, ':', {i})");
    format!(
        "SELECT CASE WHEN $2::bigint > 0 AND $3::bigint >= {max}::bigint THEN \
         ({count}::bigint - {n} + $2::bigint)::text || ':' || ({sum}::numeric - {s} + $2::bigint::numeric * hashint8extended($3::bigint, 0))::text || ':' || $3::bigint::text || ':' || ({def}) \
         WHEN $2::bigint = 0 AND {n} = 0 THEN {count} || ':' || {sum} || ':' || {max} || ':' || ({def}) END",
        count = part(1),
        sum = part(2),
        max = part(3),
        def = definition_sql(qualified),
    )
}

/// A history table's state after its merge ([`told_state_sql`]): the versions it took out are
/// the rows of `old`, each with its `_etl_xmin`.
pub fn moved_state_sql(qualified: &str, old: &str) -> String {
    format!(
        "{} FROM (SELECT count(*) AS n, coalesce(sum(hashint8extended(_etl_xmin, 0)), 0) AS s FROM {old}) AS o",
        told_state_sql(qualified, "o.n", "o.s")
    )
}

/// An upserted table's state after its merge ([`told_state_sql`]): the versions it took out are
/// the `$4` rows it updated, the hashes of their `xmin`s before summing to `$5` (the merge's own
/// figures).
pub fn upserted_state_sql(qualified: &str) -> String {
    told_state_sql(qualified, "$4::bigint", "$5::numeric")
}

/// An MD5 of a table's definition in the catalog: columns (number, name, type, not null,
/// default, the value of rows written before the column was added), constraints, indexes, and
/// the heap's file node.
fn definition_sql(qualified: &str) -> String {
    let rel = format!("'{}'::regclass", qualified.replace('\'', "''"));
    format!(
        "SELECT md5(coalesce((SELECT string_agg(a.attnum || ' ' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod) || ' ' || a.attnotnull || ' ' || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || ' ' || coalesce(a.attmissingval::text, ''), ',' ORDER BY a.attnum) \
         FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum WHERE a.attrelid = {rel} AND a.attnum > 0 AND NOT a.attisdropped), '') \
         || '|' || coalesce((SELECT string_agg(conname || ' ' || pg_get_constraintdef(oid), ',' ORDER BY conname) FROM pg_constraint WHERE conrelid = {rel}), '') \
         || '|' || coalesce((SELECT string_agg(pg_get_indexdef(indexrelid), ',' ORDER BY pg_get_indexdef(indexrelid)) FROM pg_index WHERE indrelid = {rel}), '') \
         || '|' || coalesce(pg_relation_filenode({rel})::text, ''))"
    )
}

/// The stage's `SET LOCAL lock_timeout` and `statement_timeout` (spans the spec check allowed:
/// digits and a unit).
pub fn timeouts(lock: Option<&str>, statement: Option<&str>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, value) in [("lock_timeout", lock), ("statement_timeout", statement)] {
        if let Some(v) = value.map(str::trim).filter(|v| crate::spec::check::is_pg_interval(v)) {
            out.push(format!("SET LOCAL {name} = '{v}'"));
        }
    }
    out
}

/// The sessions holding the locks a stage waits for (`$1`: its table and the tables it
/// references, quoted and qualified; `$2`: its advisory lock's key), read from another session
/// when a lock wait timed out: pid, user, state, since when, and the start of their query.
pub const LOCK_HOLDERS: &str = "SELECT DISTINCT a.pid::text || ' (' || coalesce(a.usename::text, '?') || ', ' || coalesce(a.state, '?')
          || coalesce(', since ' || to_char(a.xact_start, 'YYYY-MM-DD HH24:MI:SS'), '') || '): '
          || left(regexp_replace(coalesce(a.query, ''), '\\s+', ' ', 'g'), 200)
     FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.granted AND l.pid <> pg_backend_pid()
      AND ((l.locktype = 'relation' AND l.relation IN (SELECT to_regclass(t) FROM unnest($1::text[]) t))
        OR (l.locktype = 'advisory' AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = hashtextextended($2, 0)))";

fn export(query: &str) -> String {
    format!("COPY ({query}) TO STDOUT (FORMAT csv)")
}

/// Compiles a PostgreSQL stage's statements.
pub fn compile(t: &TargetPlan, columns: &[ColumnPlan], lookups: &Lookups) -> PgStatements {
    let q = &t.qualified;
    let schema = t.schema.clone().unwrap_or_else(|| "public".into());
    let key_is_unique = (!t.key.is_empty()).then(|| {
        let mut key: Vec<String> = t.key.iter().cloned().chain(t.history.as_ref().map(|h| h.valid_from.clone())).collect();
        key.sort();
        Query {
            sql: "SELECT EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname = $1 AND c.relname = $2 AND i.indisunique
                    AND (SELECT array_agg(a.attname::text ORDER BY a.attname::text) FROM pg_attribute a
                          WHERE a.attrelid = c.oid AND a.attnum = ANY (i.indkey)) = $3)"
                .into(),
            binds: vec![Bind::Text(schema.clone()), Bind::Text(t.table.clone()), Bind::Texts(key)],
        }
    });
    let foreign_key_exists = t
        .sql
        .foreign_keys
        .iter()
        .map(|fk| {
            Query::new(
                "SELECT EXISTS (SELECT 1 FROM pg_constraint c JOIN pg_class r ON r.oid = c.conrelid
               JOIN pg_namespace n ON n.oid = r.relnamespace WHERE n.nspname = $1 AND r.relname = $2 AND c.conname = $3)",
                &[&schema, &t.table, &fk.name],
            )
        })
        .collect();
    let mut tables: Vec<&str> = lookups.references.iter().map(|r| r.table.as_str()).collect();
    // `on_delete: soft`: which of the rows the file lacks are deleted depends on the tables
    // referencing this one, so their states are part of what the outcome depended on.
    if t.delete_missing == Some(crate::spec::model::DeleteMissing::Hard) && t.on_delete == OnDelete::Soft {
        tables.extend(t.referencing.iter().map(|r| r.table.as_str()));
    }
    // A `sql` contract may read any other stage's table.
    tables.extend(t.contract_reads.iter().map(String::as_str));
    tables.sort_unstable();
    tables.dedup();
    let referenced = tables
        .iter()
        .map(|table| Referenced {
            table: (*table).to_string(),
            exists: Query::new(TABLE_EXISTS, &[table]),
            lock: format!("LOCK TABLE {table} IN SHARE MODE"),
            state: state_sql(table),
        })
        .collect();
    let reference_lookups = lookups
        .references
        .iter()
        .map(|r| {
            let ty = columns.iter().find(|c| c.name == r.column).map(|c| c.ty).unwrap_or(crate::spec::model::ColumnType::String);
            let k = ident(&r.ref_column);
            let keys = [(r.ref_column.clone(), ty)];
            ReferenceLookup {
                column: r.column.clone(),
                table: r.table.clone(),
                exists: Query::new(TABLE_EXISTS, &[&r.table]),
                lock: format!("LOCK TABLE {} IN SHARE MODE", r.table),
                lock_for_new_table: format!("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE", r.table),
                lookup: Lookup {
                    export: export(&format!("SELECT DISTINCT {k} FROM {} WHERE {k} IS NOT NULL", r.table)),
                    create: lookup_create(&r.relation, &keys),
                    fill: lookup_fill(&r.relation, &keys),
                },
            }
        })
        .collect();
    let current_lookup = lookups.current.as_ref().map(|relation| {
        let typed: Vec<(String, crate::spec::model::ColumnType)> = columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
        let list: Vec<String> = columns.iter().map(|c| ident(&c.name)).collect();
        CurrentLookup {
            size: Query::new(TABLE_SIZE, &[q]),
            lookup: Lookup {
                export: export(&format!("SELECT {} FROM {q}", list.join(", "))),
                create: lookup_create(relation, &typed),
                fill: lookup_fill(relation, &typed),
            },
        }
    });
    let held_lookups = lookups
        .held
        .iter()
        .map(|h| {
            let typed: Vec<(String, crate::spec::model::ColumnType)> = std::iter::once(&h.column)
                .chain(&t.key)
                .map(|n| (n.clone(), columns.iter().find(|c| &c.name == n).map(|c| c.ty).unwrap_or(crate::spec::model::ColumnType::String)))
                .collect();
            let list: Vec<String> = typed.iter().map(|(n, _)| ident(n)).collect();
            Lookup {
                export: export(&format!("SELECT {} FROM {q} WHERE {} IS NOT NULL", list.join(", "), ident(&h.column))),
                create: lookup_create(&h.relation, &typed),
                fill: lookup_fill(&h.relation, &typed),
            }
        })
        .collect();
    let mut settings: Vec<String> = vec!["SET LOCAL DateStyle = ISO".into(), "SET LOCAL extra_float_digits = 1".into()];
    if t.distribution.is_some() {
        // Citus: a transaction that wrote a distributed table over several connections per node
        // cannot then add or check a foreign key to a reference table; one connection per node
        // keeps every step of the stage in one transaction.
        settings.push("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'".into());
    }
    PgStatements {
        settings,
        savepoint: "SAVEPOINT etl_stage".into(),
        rollback_to_savepoint: "ROLLBACK TO SAVEPOINT etl_stage".into(),
        advisory_lock: Query::new("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&format!("etl:{q}")]),
        read_columns: Query::new(
            "SELECT column_name::text, data_type::text, character_maximum_length, numeric_precision, numeric_scale
         FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
            &[&schema, &t.table],
        ),
        schema_exists: Query::new("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", &[&schema]),
        create_schema: format!("CREATE SCHEMA {}", ident(&schema)),
        key_is_unique,
        foreign_key_exists,
        lock: format!("LOCK TABLE {q} IN SHARE ROW EXCLUSIVE MODE"),
        exists: Query::new(TABLE_EXISTS, &[q]),
        is_empty: format!("SELECT NOT EXISTS (SELECT 1 FROM {q})"),
        delete_all: (t.mode == LoadMode::Replace && t.delete_missing.is_none()).then(|| format!("DELETE FROM {q}")),
        state: state_sql(q),
        definition: format!("SELECT ({})", definition_sql(q)),
        // Told, not scanned, only where every row version is this node's: a Citus table's rows
        // are written by the workers' transactions, whose ids are their own.
        fresh_state: t.distribution.is_none().then(|| fresh_state_sql(q)),
        referenced,
        reference_lookups,
        current_lookup,
        held_lookups,
        missing: missing_sql(t),
        moved_state: t.history.as_ref().filter(|_| t.distribution.is_none()).map(|_| moved_state_sql(q, &ident("_etl_history_old"))),
        upserted_state: (t.mode == crate::spec::model::LoadMode::Upsert && t.delete_missing.is_none() && !t.key.is_empty() && t.distribution.is_none())
            .then(|| upserted_state_sql(q)),
        newest_as_of: t.history.as_ref().map(|_| {
            format!("SELECT max(as_of)::text FROM {} WHERE target_table = {}", super::load::AS_OF_DATES, super::sql::literal(&t.qualified))
        }),
    }
}

/// The keys table of `delete_missing`.
pub fn keys_table(t: &TargetPlan) -> String {
    format!("_etl_keys_{}", t.table)
}

/// The temporary table of the last file's keys no line of this one holds (a history load of the
/// changed lines).
pub fn vanished_table(t: &TargetPlan) -> String {
    format!("_etl_vanished_{}", t.table)
}

fn missing_sql(t: &TargetPlan) -> Option<MissingSql> {
    let q = &t.qualified;
    let keys = ident(&keys_table(t));
    let list: Vec<String> = t.key.iter().map(|k| ident(k)).collect();
    let on: Vec<String> = t.key.iter().map(|k| format!("k.{0} = t.{0}", ident(k))).collect();
    // Citus runs a subquery over the coordinator's keys table only uncorrelated (it computes it
    // first): the key in the list, which a key column (never null) makes the same test.
    let found = if t.distribution.is_some() {
        let row: Vec<String> = list.iter().map(|k| format!("t.{k}")).collect();
        format!("({}) IN (SELECT {} FROM {keys})", row.join(", "), list.join(", "))
    } else {
        format!("EXISTS (SELECT 1 FROM {keys} AS k WHERE {})", on.join(" AND "))
    };
    // The count of the rows whose key the file lacks, joined (a hash or merge join): an EXISTS in
    // an aggregate's FILTER is a subplan run once per row, a scan of the keys per row.
    let counted = |filter: &str| {
        format!(
            "SELECT count(*) FILTER (WHERE k._etl_found IS NULL), count(*) FROM {q} AS t LEFT JOIN (SELECT DISTINCT {}, true AS _etl_found FROM {keys}) AS k ON {}{filter}",
            list.join(", "),
            on.join(" AND ")
        )
    };
    let key_types = || format!("CREATE TEMP TABLE {keys} ON COMMIT DROP AS SELECT {} FROM {q} WITH NO DATA", list.join(", "));
    let copy_keys = format!("COPY {keys} ({}) FROM STDIN (FORMAT csv)", list.join(", "));
    // A history table closing the keys its file lacks: they are closed in its merge; the ratio
    // counts the versions current on the load's date.
    if let Some(h) = t.history.as_ref().filter(|h| h.close) {
        let d = format!("{}::date", super::sql::literal(&h.date));
        let (from, to) = (ident(&h.valid_from), ident(&h.valid_to));
        let covering = format!(" WHERE t.{from} <= {d} AND (t.{to} IS NULL OR t.{to} > {d})");
        let count = counted(&covering);
        let vanished = ident(&vanished_table(t));
        let gone_on: Vec<String> = t.key.iter().map(|k| format!("v.{0} = t.{0}", ident(k))).collect();
        let lines = Vanished {
            jit_off: "SET LOCAL jit = off".into(),
            create: format!("CREATE TEMP TABLE {vanished} ON COMMIT DROP AS SELECT {} FROM {q} WITH NO DATA", list.join(", ")),
            copy: format!("COPY {vanished} ({}) FROM STDIN (FORMAT csv)", list.join(", ")),
            // From the few vanished keys (looked up by the table's key), not a join of every row.
            // Each vanished key looked up by the table's key (`OFFSET 0`: a nested loop, not a
            // hash of the whole table; JIT off, see `jit_off`).
            // On Citus (no lateral join from the coordinator's table into a distributed one):
            // the vanished keys no changed line holds, as an uncorrelated IN.
            gone: if t.distribution.is_some() {
                format!(
                    "SELECT count(*) FROM {q} AS t{covering} AND ({list}) IN (SELECT {list} FROM {vanished} EXCEPT SELECT {list} FROM {keys})",
                    list = list.join(", "),
                )
            } else {
                format!(
                    "SELECT count(*) FROM (SELECT DISTINCT {list} FROM {vanished}) AS v CROSS JOIN LATERAL (SELECT 1 FROM {q} AS t WHERE {}{} OFFSET 0) AS x \
                     WHERE NOT EXISTS (SELECT 1 FROM {keys} AS k WHERE {})",
                    gone_on.join(" AND "),
                    covering.replacen(" WHERE ", " AND ", 1),
                    t.key.iter().map(|k| format!("k.{0} = v.{0}", ident(k))).collect::<Vec<_>>().join(" AND "),
                    list = list.join(", "),
                )
            },
            rows: format!("SELECT count(*) FROM {q} AS t{covering}"),
        };
        return Some(MissingSql { vanished: Some(lines), ..MissingSql::new(key_types(), copy_keys, count, String::new()) });
    }
    let how = t.delete_missing?;
    let deleted_at = ident(crate::spec::model::DELETED_AT);
    let soft = how == crate::spec::model::DeleteMissing::Soft;
    let flags = t.flags_deleted();
    let live = if flags { format!(" WHERE t.{deleted_at} IS NULL") } else { String::new() };
    let add_column = flags.then(|| format!("ALTER TABLE {q} ADD COLUMN {deleted_at} DATE"));
    let restore = flags.then(|| format!("UPDATE {q} AS t SET {deleted_at} = NULL WHERE t.{deleted_at} IS NOT NULL AND {found}"));
    let count = counted(&live);
    let mut sql = MissingSql { add_column, restore, ..MissingSql::new(key_types(), copy_keys, count, format!("DELETE FROM {q} AS t WHERE NOT {found}")) };
    if soft {
        sql.apply = format!("UPDATE {q} AS t SET {deleted_at} = $1::date WHERE t.{deleted_at} IS NULL AND NOT {found}");
        return Some(sql);
    }
    // The values of the rows about to be deleted that other tables reference.
    let doomed = |column: &str| format!("SELECT t.{} FROM {q} AS t WHERE NOT {found}", ident(column));
    match t.on_delete {
        OnDelete::Restrict => {
            sql.referenced_by = t
                .referencing
                .iter()
                .map(|r| {
                    let sample = format!(
                        "SELECT count(*) OVER (), row_to_json(r)::text FROM {} AS r WHERE r.{} IN ({}) LIMIT 5",
                        r.table,
                        ident(&r.column),
                        doomed(&r.ref_column)
                    );
                    guarded(&r.table, &[&r.table], sample)
                })
                .collect();
        }
        OnDelete::Cascade => {
            for r in &t.referencing {
                cascade_deletes(r, &doomed(&r.ref_column), &[], 0, &mut sql.cascade);
            }
        }
        OnDelete::Soft => {
            let held = ident(&format!("_etl_held_{}", t.table));
            let on_held: Vec<String> = t.key.iter().map(|k| format!("h.{0} = t.{0}", ident(k))).collect();
            let keys_of_t: Vec<String> = t.key.iter().map(|k| format!("t.{}", ident(k))).collect();
            // Uncorrelated on a Citus table, as `found` is.
            let is_held = if t.distribution.is_some() {
                format!("({}) IN (SELECT {} FROM {held})", keys_of_t.join(", "), list.join(", "))
            } else {
                format!("EXISTS (SELECT 1 FROM {held} AS h WHERE {})", on_held.join(" AND "))
            };
            sql.create_held = Some(format!("CREATE TEMP TABLE {held} ON COMMIT DROP AS SELECT {} FROM {q} WITH NO DATA", list.join(", ")));
            sql.hold = t
                .referencing
                .iter()
                .map(|r| {
                    let hold = format!(
                        "INSERT INTO {held} ({}) SELECT {} FROM {q} AS t WHERE NOT {found} AND EXISTS (SELECT 1 FROM {} AS r WHERE r.{} = t.{})",
                        list.join(", "),
                        keys_of_t.join(", "),
                        r.table,
                        ident(&r.column),
                        ident(&r.ref_column)
                    );
                    guarded(&r.table, &[&r.table], hold)
                })
                .collect();
            sql.flag_referenced = Some(format!("UPDATE {q} AS t SET {deleted_at} = $1::date WHERE t.{deleted_at} IS NULL AND {is_held}"));
            sql.apply = format!("DELETE FROM {q} AS t WHERE NOT {found} AND NOT {is_held}");
        }
    }
    Some(sql)
}

/// A statement sent only when the tables it names exist.
fn guarded(table: &str, tables: &[&str], sql: String) -> Guarded {
    Guarded {
        table: table.to_string(),
        exists: Query {
            sql: "SELECT CASE WHEN bool_and(to_regclass(n) IS NOT NULL) THEN 'yes' END FROM unnest($1::text[]) AS n".into(),
            binds: vec![Bind::Texts(tables.iter().map(|t| (*t).to_string()).collect())],
        },
        sql,
    }
}

/// The deletes of a cascade through `r`, whose rows referencing a value `parent` selects go: the
/// tables referencing `r` first, so no foreign key is broken on the way. `above`: the referencing
/// tables `parent` reads.
fn cascade_deletes(r: &Referencing, parent: &str, above: &[&str], depth: usize, out: &mut Vec<Guarded>) {
    let alias = format!("c{depth}");
    let rows = format!("{alias}.{} IN ({parent})", ident(&r.column));
    let tables: Vec<&str> = above.iter().copied().chain(std::iter::once(r.table.as_str())).collect();
    for deeper in &r.referencing {
        let next = format!("SELECT {alias}.{} FROM {} AS {alias} WHERE {rows}", ident(&deeper.ref_column), r.table);
        cascade_deletes(deeper, &next, &tables, depth + 1, out);
    }
    out.push(guarded(&r.table, &tables, format!("DELETE FROM {} AS {alias} WHERE {rows}", r.table)));
}

/// Empties the given tables (`etl clean`) in one statement, so tables referencing each other
/// can be emptied together.
pub fn truncate(tables: &[String]) -> String {
    format!("TRUNCATE {}", tables.join(", "))
}
