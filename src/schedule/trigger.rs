//! Triggers: a cron expression or every day/hour/minute from the CLI's or a spec's words, the
//! next time a job fires, and the tick a firing belongs to (the same on every scheduler).

use std::path::Path;

use chrono::{DateTime, Utc};

use super::store::JobDef;
use crate::plan::Plan;
use crate::spec::model::Every;
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

/// The tick a firing at `now` belongs to: the latest occurrence not after `now` (plus a little
/// slack). Every scheduler computes the same tick, which is what makes the claim work.
pub fn tick(j: &JobDef, now: DateTime<Utc>) -> DateTime<Utc> {
    let Some((tz, cron)) = j.timezone.parse::<chrono_tz::Tz>().ok().zip(parse_cron(&j.cron)) else {
        return now;
    };
    use chrono::Timelike;
    let probe = (now + chrono::Duration::milliseconds(1500)).with_timezone(&tz);
    let probe = probe.with_nanosecond(0).unwrap_or(probe);
    cron.find_previous_occurrence(&probe, true)
        .map(|t| t.with_timezone(&Utc))
        .map(|t| t.with_nanosecond(0).unwrap_or(t))
        .unwrap_or(now)
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
        })
        .collect()
}
