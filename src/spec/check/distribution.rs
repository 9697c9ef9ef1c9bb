//! The checks of a stage's `distribution` over a Citus cluster: what Citus requires of a
//! distributed or reference table (a postgres target, the distribution column in every unique
//! key, foreign keys that stay within a node), each stated with its fix.

use super::Checker;
use crate::spec::diag::{Problem, suggest};
use crate::spec::model::Distribution::{Hash, Reference};
use crate::spec::model::{Connection, Distribution, HashDistribution, Stage};
use crate::spec::source::Pointer;

impl Checker<'_> {
    pub(super) fn distribution(&mut self, sname: &str, stage: &Stage, at: &Pointer) {
        self.distributed_references(sname, stage, at);
        let t = &stage.target;
        let Some(d) = &t.distribution else { return };
        let tat = at.key("target");
        let dat = tat.key("distribution");
        if let Some(other) = self.spec.connections.get(&t.connection).filter(|c| !matches!(c, Connection::Postgres(_))) {
            self.push(
                Problem::new("spec::distribution_connection", dat.clone(), format!("stage `{sname}` is spread over a Citus cluster, but loads into `{}`, a {} connection", t.connection, other.kind()))
                    .on_key()
                    .label("only on a postgres target")
                    .help("load into a postgres connection to the Citus coordinator, or remove `distribution`"),
            );
        }
        let Distribution::Hash(h) = d else { return };
        match stage.columns.get(&h.column) {
            None => {
                let names: Vec<&str> = stage.columns.keys().map(String::as_str).collect();
                self.push(
                    Problem::new("spec::unknown_column", dat.key("column"), format!("distribution column `{}` is not a column of stage `{sname}`", h.column))
                        .label("no such column")
                        .help(suggest(&h.column, names.iter().copied()).unwrap_or_else(|| format!("columns are: {}", names.join(", ")))),
                );
                return;
            }
            Some(c) if c.nullable => self.push(
                Problem::new("spec::nullable_distribution", dat.key("column"), format!("distribution column `{}` is nullable, and Citus places no row without its value", h.column))
                    .label("must always have a value")
                    .help(format!("remove `nullable: true` from column `{}`, or distribute by another column", h.column)),
            ),
            Some(_) => {}
        }
        if !t.key.is_empty() && !t.key.contains(&h.column) {
            self.push(
                Problem::new("spec::distribution_key", tat.key("key"), format!("stage `{sname}`'s key ({}) does not include its distribution column `{}`", t.key.join(", "), h.column))
                    .label("Citus keeps a key unique within a shard only")
                    .help(format!("add `{}` to the key, or distribute by a key column", h.column)),
            );
        }
        let single_key = |n: &str| t.key.len() == 1 && t.key[0] == n;
        for (cname, _) in stage.columns.iter().filter(|(n, c)| c.unique && **n != h.column && !single_key(n)) {
            self.push(
                Problem::new("spec::distribution_unique", at.key("columns").key(cname).key("unique"), format!("column `{cname}` is unique, but stage `{sname}` is distributed by `{}`", h.column))
                    .on_key()
                    .label("Citus keeps a value unique within a shard only")
                    .help(format!("distribute by `{cname}`, or drop `unique: true` (check it with a contract instead)")),
            );
        }
        if let Some(other) = &h.colocate_with {
            let cat = dat.key("colocate_with");
            match self.spec.stages.get(other) {
                _ if other == sname => self.push(Problem::new("spec::colocate_with", cat, format!("stage `{sname}` is colocated with itself")).label("name another distributed stage")),
                None => {
                    let names: Vec<&str> = self.spec.stages.keys().map(String::as_str).collect();
                    self.push(
                        Problem::new("spec::unknown_stage", cat, format!("stage `{sname}` is colocated with `{other}`, which is not a stage"))
                            .label("no such stage")
                            .help(suggest(other, names.iter().copied()).unwrap_or_else(|| format!("stages are: {}", names.join(", ")))),
                    );
                }
                Some(_) if !self.depends_on(sname, other) => self.push(
                    Problem::new("spec::colocate_with", cat, format!("stage `{sname}` is colocated with `{other}`, whose table may not exist yet when `{sname}` creates its own"))
                        .label("must load before this stage")
                        .help(format!("add `{other}` to the `needs` of stage `{sname}`")),
                ),
                Some(o) => match &o.target.distribution {
                    Some(Distribution::Hash(oh)) => {
                        let (mine, theirs) = (stage.columns.get(&h.column).map(|c| c.ty), o.columns.get(&oh.column).map(|c| c.ty));
                        if let (Some(a), Some(b)) = (mine, theirs)
                            && a != b
                        {
                            self.push(
                                Problem::new("spec::colocate_with", cat, format!("stage `{sname}` is distributed by `{}` ({a}) but colocated with `{other}`, distributed by `{}` ({b})", h.column, oh.column))
                                    .label("distribution columns of different types")
                                    .help("colocate tables whose distribution columns have the same type"),
                            );
                        }
                    }
                    _ => self.push(
                        Problem::new("spec::colocate_with", cat, format!("stage `{sname}` is colocated with `{other}`, which is not distributed by a column"))
                            .label("not a distributed stage")
                            .help(format!("give stage `{other}` a `distribution: {{ column: ... }}`, or remove `colocate_with`")),
                    ),
                },
            }
        }
    }

    /// The foreign keys Citus can keep: from a distributed table to a reference table or to a
    /// colocated table on the distribution columns; from a reference table or a table of the
    /// coordinator to a reference table (or, for the latter, a table of the coordinator).
    fn distributed_references(&mut self, sname: &str, stage: &Stage, at: &Pointer) {
        let spec = self.spec;
        let mine = stage.target.distribution.as_ref();
        for (cname, col) in &stage.columns {
            let Some((rstage, rcol)) = col.references.as_deref().and_then(|r| r.split_once('.')) else { continue };
            let Some(target) = spec.stages.get(rstage) else { continue };
            let theirs = target.target.distribution.as_ref();
            let rat = at.key("columns").key(cname).key("references");
            let problem = match (mine, theirs) {
                (None, None | Some(Reference)) | (Some(Reference), Some(Reference)) => None,
                (Some(Hash(_)), Some(Reference)) => None,
                (Some(Reference), _) => Some((
                    format!("column `{cname}` of reference stage `{sname}` references `{rstage}`, which is not a reference table"),
                    format!("make stage `{rstage}` a reference table too (`distribution: reference`)"),
                )),
                (None, Some(Hash(_))) => Some((
                    format!("column `{cname}` of stage `{sname}`, a table of the coordinator, references distributed stage `{rstage}`"),
                    format!("distribute stage `{sname}` by `{cname}`, colocated with `{rstage}`, or make `{rstage}` a reference table"),
                )),
                (Some(Hash(_)), None) => Some((
                    format!("column `{cname}` of distributed stage `{sname}` references `{rstage}`, a table of the coordinator"),
                    format!("make stage `{rstage}` a reference table (`distribution: reference`)"),
                )),
                (Some(Hash(h)), Some(Hash(rh))) => (h.column != *cname || rh.column != rcol || !colocated(rstage, h, rh)).then(|| {
                    (
                        format!("column `{cname}` of distributed stage `{sname}` references `{rstage}.{rcol}`, which its shards may not hold"),
                        format!("distribute `{sname}` by `{cname}` and `{rstage}` by `{rcol}`, colocated (`colocate_with: {rstage}`), or make `{rstage}` a reference table"),
                    )
                }),
            };
            if let Some((message, help)) = problem {
                self.push(Problem::new("spec::distributed_reference", rat, message).label("a foreign key Citus cannot keep").help(help));
            }
        }
    }
}

/// Whether a distributed stage's shards are placed with those of stage `b`, which it references:
/// it names `b` in `colocate_with`, both name the same stage, or neither names one and they split
/// alike (Citus
/// colocates tables with the same shard count by default; the distribution columns' types are
/// checked with `colocate_with`).
fn colocated(b: &str, ah: &HashDistribution, bh: &HashDistribution) -> bool {
    // (The referenced stage cannot name the referencing one: it would have to come after it.)
    match (&ah.colocate_with, &bh.colocate_with) {
        (Some(x), _) if x == b => true,
        (Some(x), Some(y)) => x == y,
        (None, None) => ah.shard_count == bh.shard_count,
        _ => false,
    }
}
