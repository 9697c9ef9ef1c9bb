//! Triggers: a cron expression or every day/hour/minute from the CLI's or a spec's words, the
//! next time a job fires (the tick every scheduler names its firing by), and the ticks missed
//! while no scheduler ran.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::store::JobDef;
use crate::plan::Plan;
use crate::spec::model::{Catchup, Every};
use crate::spec::words;

fn parse_cron(six: &str) -> Option<croner::Cron> {
    croner::parser::CronParser::builder().seconds(croner::parser::Seconds::Required).dom_and_dow(true).build().parse(six).ok()
}

/// The next time a job fires after `after`, in UTC.
pub fn next_run(j: &JobDef, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let tz: chrono_tz::Tz = j.timezone.parse().ok()?;
    let cron = parse_cron(&j.cron)?;
    cron.find_next_occurrence(&after.with_timezone(&tz), false).ok().map(|t| t.with_timezone(&Utc))
}

/// The firings a starting scheduler makes up: the job's ticks after `since` and not after `now`,
/// oldest first, as its `catchup` says (none, the latest, or the latest `max_catchup`). Walks
/// back from `now`, so a long downtime of a frequent job costs no more than the firings made up.
/// The second value is true when older missed ticks were left out by `max_catchup`.
pub fn missed(j: &JobDef, since: DateTime<Utc>, now: DateTime<Utc>) -> (Vec<DateTime<Utc>>, bool) {
    let limit = match j.catchup {
        Catchup::Skip => return (Vec::new(), false),
        Catchup::Latest => 1,
        Catchup::All => j.max_catchup.max(1) as usize,
    };
    let Some((tz, cron)) = j.timezone.parse::<chrono_tz::Tz>().ok().zip(parse_cron(&j.cron)) else {
        return (Vec::new(), false);
    };
    use chrono::Timelike;
    let mut ticks = Vec::new();
    // Ticks are whole seconds, as every firing's (`runner::timer`).
    let now = now.with_timezone(&tz);
    let mut probe = now.with_nanosecond(0).unwrap_or(now);
    let mut inclusive = true;
    let more = loop {
        let Ok(t) = cron.find_previous_occurrence(&probe, inclusive) else { break false };
        let t = t.with_nanosecond(0).unwrap_or(t);
        let t_utc = t.with_timezone(&Utc);
        if t_utc <= since {
            break false;
        }
        if ticks.len() == limit {
            break true;
        }
        ticks.push(t_utc);
        probe = t;
        inclusive = false;
    };
    ticks.reverse();
    (ticks, more)
}

/// A trigger from the CLI's or a spec's words: a cron expression, or every day/hour/minute.
pub fn trigger(cron: Option<&str>, every: Option<Every>, at: Option<&str>) -> Result<(String, String), String> {
    match (cron, every) {
        (Some(c), None) => Ok((words::cron_expression(c).map_err(|e| format!("`{c}` is not a cron expression: {e}"))?, format!("cron {c}"))),
        (None, Some(e)) => {
            if at.is_some() && e != Every::Day {
                return Err("--at applies to --interval day only".into());
            }
            if let Some(a) = at
                && words::parse_at(a).is_none()
            {
                return Err(format!("--at {a}: write the time of day as HH:MM"));
            }
            Ok((words::every_cron(e, at), words::every_words(e, at)))
        }
        (Some(_), Some(_)) => Err("give --cron or --interval, not both".into()),
        (None, None) => Err("give --interval day|hour|minute (with --at HH:MM for day) or --cron EXPR".into()),
    }
}

/// The jobs a compiled spec declares under `schedules:`.
pub fn spec_jobs(plan: &Plan, spec_path: &Path) -> Vec<JobDef> {
    plan.schedules
        .iter()
        .map(|s| JobDef {
            job_id: s.name.clone(),
            spec_path: spec_path.display().to_string(),
            stages: s.stages.clone(),
            cron: s.cron.clone(),
            trigger: s.trigger.clone(),
            timezone: s.timezone.clone(),
            enabled: s.enabled,
            catchup: s.catchup,
            max_catchup: s.max_catchup,
            retries: s.retries,
            retry_delay: s.retry_delay,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(catchup: Catchup, max: u32) -> JobDef {
        JobDef {
            job_id: "j".into(),
            spec_path: "s.yaml".into(),
            stages: None,
            cron: "0 0 * * * *".into(),
            trigger: "every hour".into(),
            timezone: "UTC".into(),
            enabled: true,
            catchup,
            max_catchup: max,
            retries: 0,
            retry_delay: std::time::Duration::from_secs(300),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn missed_ticks_are_the_ones_after_the_last_firing_oldest_first_as_catchup_says() {
        let (since, now) = (at("2025-12-22T01:00:00Z"), at("2025-12-22T05:30:00Z"));
        assert_eq!(missed(&job(Catchup::Skip, 10), since, now), (vec![], false));
        assert_eq!(missed(&job(Catchup::Latest, 10), since, now), (vec![at("2025-12-22T05:00:00Z")], true));
        let all = ["02", "03", "04", "05"].map(|h| at(&format!("2025-12-22T{h}:00:00Z"))).to_vec();
        assert_eq!(missed(&job(Catchup::All, 10), since, now), (all.clone(), false), "the tick at `since` itself has fired");
        assert_eq!(missed(&job(Catchup::All, 2), since, now), (all[2..].to_vec(), true), "the latest max_catchup");
        assert_eq!(missed(&job(Catchup::All, 4), since, now), (all.clone(), false));
        // A tick exactly now is missed too (the running scheduler's next one is after now).
        assert_eq!(missed(&job(Catchup::All, 10), since, at("2025-12-22T05:00:00Z")), (all, false));
        assert_eq!(missed(&job(Catchup::All, 10), now, now), (vec![], false));
        // Whole-second ticks, whatever the clock's fraction: the tick at `since` is not missed.
        let five = at("2025-12-22T05:00:00Z");
        assert_eq!(missed(&job(Catchup::All, 10), five, five + chrono::Duration::milliseconds(240)), (vec![], false));
        let (ticks, _) = missed(&job(Catchup::All, 10), at("2025-12-22T04:00:00Z"), five + chrono::Duration::milliseconds(240));
        assert_eq!(ticks, [five], "the tick is whole seconds");
    }
}
