//! `etl worker`: loads the files of the spec's distributed runs from their work queue, one claim
//! at a time, the spec compiled for each claim's business date and stage.

use std::time::Instant;

use super::args::WorkerArgs;
use super::error::CliError;
use super::prepare::prepare;
use crate::exec;
use crate::exit;

/// Claims and loads files until stopped, or until idle for `--exit-when-idle`.
pub fn run(args: WorkerArgs) -> Result<u8, CliError> {
    let id = args.id.clone().unwrap_or_else(|| format!("{}:{}", std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()), std::process::id()));
    let base = prepare(&args.run)?;
    let queue = exec::queue::Queue::open(&base.plan)?;
    eprintln!("worker {id}: looking for files of spec {} every {}", base.plan.name, humantime::format_duration(args.poll));
    let mut idle = Instant::now();
    loop {
        let Some((claim, _beat)) = queue.claim(&id, args.run.lease)? else {
            if let Some(limit) = args.exit_when_idle
                && idle.elapsed() >= limit
            {
                eprintln!("worker {id}: nothing to load for {}: exiting", humantime::format_duration(limit));
                return Ok(exit::OK);
            }
            std::thread::sleep(args.poll);
            continue;
        };
        eprintln!("worker {id}: claimed {} of stage {} (run {}, {}, attempt {})", claim.file_key, claim.stage, claim.run_id, claim.date, claim.attempts);
        let mut one = args.run.clone();
        one.spec.date = Some(claim.date);
        one.stages = vec![claim.stage.clone()];
        // A spec that no longer compiles leaves the claim to run out: it is tried again (by any
        // worker, the spec perhaps fixed) and given up after its last attempt.
        match prepare(&one) {
            Ok(p) => match exec::queue::work(&p.plan, &p.opts, &claim) {
                Ok(Some(r)) => eprintln!("worker {id}: {}: {} ({} rows read, {} rejected)", claim.file_key, r.status, r.rows_read, r.rows_rejected),
                Ok(None) => eprintln!("worker {id}: {}: handed back: a file queued before it waits for a worker", claim.file_key),
                Err(e) => eprintln!("worker {id}: {}: failed: {e}", claim.file_key),
            },
            Err(e) => eprintln!("worker {id}: {}: the spec does not compile: {e}", claim.file_key),
        }
        idle = Instant::now();
    }
}
