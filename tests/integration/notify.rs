//! Webhooks (`notify:`): told exactly once of each run end they ask for, with the run's JSON
//! report, a summary and a Slack `text`; tried again after a failure; one that keeps failing is
//! logged and recorded with the run, which it never fails. The URL is a secret: never shown.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use crate::run::TestDb;
use crate::util::etl;

/// An HTTP receiver on 127.0.0.1: keeps each request's path and body; answers the first
/// `failures` requests with 500, the others with 200.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<(String, String)>>>,
}

impl Receiver {
    fn start(failures: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let kept = got.clone();
        std::thread::spawn(move || {
            let mut seen = 0;
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut first = String::new();
                if reader.read_line(&mut first).is_err() {
                    continue;
                }
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let path = first.split(' ').nth(1).unwrap_or_default().to_string();
                kept.lock().unwrap().push((path, String::from_utf8_lossy(&body).into_owned()));
                seen += 1;
                let status = if seen <= failures { "500 Internal Server Error" } else { "200 OK" };
                let mut stream = stream;
                let _ = stream.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes());
            }
        });
        Receiver { port, got }
    }

    fn bodies(&self) -> Vec<serde_json::Value> {
        self.got.lock().unwrap().iter().map(|(_, b)| serde_json::from_str(b).unwrap_or_default()).collect()
    }
}

#[test]
fn a_webhook_is_told_once_of_each_end_it_asks_for_and_its_url_is_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new("notify");
    // The first attempt of the first notification fails: the retry delivers it.
    let hook = Receiver::start(1);
    // Nothing listens on this one's port: it keeps failing, and is recorded.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let head = crate::util::spec_head("notify_test", dir.path().display());
    let text = format!(
        "{head}stages:
  accounts:
    source: {{ connection: files, key: accounts.csv }}
    target: {{ connection: db, table: account, key: [account_id] }}
    columns:
      account_id: {{ type: string }}
      cash: {{ type: \"decimal(20,2)\", min: 0 }}
notify:
  - {{ url: \"http://127.0.0.1:{port}/hooks/SECRET-TOKEN-7f3a\", on: [rejected, failed], retries: 2, timeout: 5s }}
  - {{ url: \"http://127.0.0.1:{dead}/DEAD-TOKEN-91c2\", on: [rejected], retries: 1, timeout: 2s }}
",
        port = hook.port
    );
    let spec = dir.path().join("notify.yaml");
    std::fs::write(&spec, text).unwrap();
    let url = std::env::var("ETL_TEST_DATABASE_URL").unwrap();
    let env = [("ETL_TEST_DATABASE_URL", url.as_str()), ("SCHEMA", db.schema.as_str())];
    let secrets = ["SECRET-TOKEN-7f3a", "DEAD-TOKEN-91c2"];

    // Rejected: the first webhook gets one notification (after one failed attempt).
    std::fs::write(dir.path().join("accounts.csv"), "account_id,cash\nA,1.00\nB,-1.00\n").unwrap();
    let out = etl(&["run", spec.to_str().unwrap(), "-v"], &env);
    out.expect_code(4);
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 2, "one failed attempt, one delivered\n{}", out.evidence());
    let told = &bodies[1];
    assert_eq!(told["status"], "rejected", "{told}");
    assert_eq!(told["stages"][0]["rows_rejected"], 1, "{told}");
    assert!(told["summary"].as_str().is_some_and(|s| s.contains("notify_test") && s.contains("rejected") && s.contains("accounts 2 read, 1 rejected")), "{told}");
    assert_eq!(told["text"], told["summary"]);
    // The dead one: logged and recorded, naming the webhook, never its URL; the run's code stands.
    assert!(out.stderr.contains("webhook 2 (notify[1]) failed after 2 attempts"), "{}", out.evidence());
    let recorded = db.texts("SELECT coalesce(notify_error, '') FROM etl_runs WHERE run_id = (SELECT max(run_id) FROM etl_runs WHERE spec_name = 'notify_test')");
    assert!(recorded[0].contains("webhook 2"), "{recorded:?}");
    for s in secrets {
        assert!(!out.stdout.contains(s) && !out.stderr.contains(s) && !recorded[0].contains(s), "{s} shown\n{}", out.evidence());
    }

    // Succeeded: not asked for, nothing sent.
    std::fs::write(dir.path().join("accounts.csv"), "account_id,cash\nA,1.00\nB,2.00\n").unwrap();
    let out = etl(&["run", spec.to_str().unwrap()], &env);
    out.expect_code(0);
    assert_eq!(hook.bodies().len(), 2, "{}", out.evidence());

    // Failed (the file is gone): told, with the error.
    std::fs::remove_file(dir.path().join("accounts.csv")).unwrap();
    let out = etl(&["run", spec.to_str().unwrap()], &env);
    out.expect_code(3);
    let bodies = hook.bodies();
    assert_eq!(bodies.len(), 3, "one more, delivered at once\n{}", out.evidence());
    assert_eq!(bodies[2]["status"], "failed", "{}", bodies[2]);
    assert!(bodies[2]["error"].as_str().is_some_and(|e| e.contains("accounts.csv")), "{}", bodies[2]);
    for s in secrets {
        assert!(!out.stdout.contains(s) && !out.stderr.contains(s), "{s} shown\n{}", out.evidence());
    }
    // Nor does a plan or a broken spec show them.
    let out = etl(&["plan", spec.to_str().unwrap()], &env);
    for s in secrets {
        assert!(!out.stdout.contains(s) && !out.stderr.contains(s), "{s} shown\n{}", out.evidence());
    }
}
