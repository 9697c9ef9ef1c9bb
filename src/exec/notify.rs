//! Webhooks told when a run ends: after everything committed, a POST of the run's JSON report
//! with a one-line `summary` and a Slack-compatible `text`, to each webhook told of that end;
//! each attempt bounded by its timeout, a failed one tried again after 1 s, 2 s, 4 s ... A webhook
//! that still fails is returned (to be logged and recorded): it never fails the run. The URLs are
//! secrets: no message names one.

use crate::plan::NotifyPlan;

/// Tells each webhook told of `end` (a run's record word); the failures, one line each.
pub fn send(hooks: &[NotifyPlan], end: &str, mut body: serde_json::Value, summary: &str) -> Vec<String> {
    if let Some(doc) = body.as_object_mut() {
        doc.insert("summary".into(), summary.into());
        doc.insert("text".into(), summary.into());
    }
    let text = body.to_string();
    let mut failed = Vec::new();
    for (i, hook) in hooks.iter().enumerate().filter(|(_, h)| h.on.contains(&end)) {
        let agent: ureq::Agent = ureq::Agent::config_builder().timeout_global(Some(hook.timeout)).build().into();
        let url = hook.url.expose();
        let mut wait = std::time::Duration::from_secs(1);
        let mut attempt = 0;
        loop {
            let sent = agent.post(url).header("Content-Type", "application/json").send(&text);
            match sent {
                Ok(_) => break,
                Err(e) if attempt < hook.retries => {
                    let _ = e;
                    std::thread::sleep(wait);
                    wait *= 2;
                    attempt += 1;
                }
                Err(e) => {
                    // The error's words without the URL, which is a secret.
                    let why = e.to_string().replace(url, "******");
                    failed.push(format!("webhook {} (notify[{i}]) failed after {} attempts: {why}", i + 1, attempt + 1));
                    break;
                }
            }
        }
    }
    failed
}

/// The one line a notification leads with: the spec, run, date, how it ended and each stage's
/// counts (or the error).
pub fn summary(report: Option<&super::RunReport>, spec: &str, date: &str, end: &str, error: Option<&str>) -> String {
    match report {
        Some(r) => {
            let stages: Vec<String> = r.stages.iter().map(|s| format!("{} {} read, {} rejected", s.stage, s.rows_read, s.rows_rejected)).collect();
            let run = r.run_id.map(|id| format!(" run {id}")).unwrap_or_default();
            format!("etl {spec}{run} for {date}: {end} ({})", stages.join("; "))
        }
        None => format!("etl {spec} for {date}: {end}: {}", error.unwrap_or_default()),
    }
}
