//! An S3 ETag names an object's content only once the bytes prove it: one shaped like an MD5 is
//! checked against the download (whole, or part by part for a multipart upload). Where it does
//! not match (a server that encrypts, or makes its ETags up: here a proxy in front of the test
//! server that gives every object the same one) the load is keyed with the object, so another
//! object with that ETag and size is not taken for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};

use crate::extract::generate;
use crate::run::{TestBucket, TestDb, s3_client_keyed};
use crate::util::Output;

/// The ETag the proxy gives every object: 32 hex digits, the MD5 of nothing here.
const MADE_UP: &str = "0123456789abcdef0123456789abcdef";

/// A proxy on loopback in front of the test S3 server that rewrites every `ETag` header of a
/// response to [`MADE_UP`] and drops `If-Match` from requests (the server knows only the real
/// ETags). One request per connection.
fn made_up_etags(upstream: &str) -> String {
    let upstream = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let upstream = upstream.clone();
            std::thread::spawn(move || {
                let _ = relay(client, &upstream);
            });
        }
    });
    format!("http://{addr}")
}

/// Reads an HTTP head (up to the blank line) from `r`.
fn head(r: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line == "\r\n" {
            return Ok(lines);
        }
        lines.push(line.trim_end_matches("\r\n").to_string());
    }
}

fn relay(client: TcpStream, upstream: &str) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let request = head(&mut from_client)?;
    let mut server = TcpStream::connect(upstream)?;
    let mut out = String::new();
    let mut body = 0usize;
    for line in &request {
        let name = line.split(':').next().unwrap_or("").to_ascii_lowercase();
        match name.as_str() {
            "if-match" | "connection" => continue,
            "content-length" => body = line.split(':').nth(1).and_then(|v| v.trim().parse().ok()).unwrap_or(0),
            _ => {}
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    server.write_all(out.as_bytes())?;
    let mut payload = vec![0u8; body];
    from_client.read_exact(&mut payload)?;
    server.write_all(&payload)?;
    let mut from_server = BufReader::new(server);
    let response = head(&mut from_server)?;
    let mut back = String::new();
    for line in response {
        if line.to_ascii_lowercase().starts_with("etag:") {
            back.push_str(&format!("ETag: \"{MADE_UP}\"\r\n"));
        } else if !line.to_ascii_lowercase().starts_with("connection:") {
            back.push_str(&line);
            back.push_str("\r\n");
        }
    }
    back.push_str("Connection: close\r\n\r\n");
    let mut client = client;
    client.write_all(back.as_bytes())?;
    std::io::copy(&mut from_server, &mut client)?;
    Ok(())
}

fn report(out: &Output) -> serde_json::Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not a JSON report: {e}\n{}", out.evidence()))
}

fn unchanged_since(out: &Output) -> Option<i64> {
    report(out)["stages"][0]["unchanged_since_run"].as_i64()
}

#[test]
fn an_etag_that_is_not_the_md5_of_the_bytes_names_only_its_own_object() {
    let data = generate(40, 0, 0.0, 71);
    let dir = data.path();
    // b.csv: a.csv with one account's type changed to another one-digit type, so the same size.
    let a = std::fs::read_to_string(dir.join("account_assets.csv")).unwrap();
    let mut lines: Vec<String> = a.lines().map(str::to_string).collect();
    let col = lines[0].split(',').position(|h| h == "account_type").unwrap();
    let n = (1..lines.len()).find(|&i| lines[i].split(',').nth(col).is_some_and(|t| t.len() == 1)).unwrap();
    let mut fields: Vec<String> = lines[n].split(',').map(str::to_string).collect();
    fields[col] = if fields[col] == "1" { "2".into() } else { "1".into() };
    lines[n] = fields.join(",");
    let b = lines.join("\n") + "\n";
    assert_eq!(a.len(), b.len());
    std::fs::write(dir.join("a.csv"), &a).unwrap();
    std::fs::write(dir.join("b.csv"), &b).unwrap();
    let bucket = TestBucket::with_files("made-up-etags", dir, &["a.csv", "b.csv"]);
    let proxied = TestBucket { endpoint: made_up_etags(&bucket.endpoint), ..bucket.clone() };
    let db = TestDb::new("made_up_etags");
    let sum = || db.texts(&format!("SELECT sum(account_type)::text FROM {}.asset", db.schema)).remove(0);
    let run = |file: &str| db.run_s3(&proxied, &["--stage", "assets", "--assets-file", file, "--output", "json", "-v"]);

    let out = run("a.csv");
    out.expect_code(0);
    let sum_a = sum();
    // Another object with the same ETag and size, other bytes: loaded, not taken for a.csv.
    let out = run("b.csv");
    out.expect_code(0);
    assert_eq!(unchanged_since(&out), None, "b.csv was taken for a.csv by its ETag\n{}", out.evidence());
    assert_ne!(sum(), sum_a, "b.csv's account type did not load\n{}", out.evidence());
    // The same object again: its ETag still names this version of this object.
    let out = run("b.csv");
    out.expect_code(0);
    assert!(unchanged_since(&out).is_some(), "the same object is not recognised\n{}", out.evidence());
}

#[test]
fn a_multipart_etag_is_checked_part_by_part_and_names_the_content_under_any_key() {
    // Over one 5 MiB part (S3's smallest but the last).
    let data = generate(80_000, 0, 0.0, 72);
    let path = data.path().join("account_assets.csv");
    let bytes = std::fs::read(&path).unwrap();
    let part = 5 * 1024 * 1024;
    assert!(bytes.len() > part, "the file is {} bytes: too small for two parts", bytes.len());
    let bucket = TestBucket::with_files("multipart", data.path(), &[]);
    let s3 = s3_client_keyed(&bucket.endpoint, &bucket.access_key, &bucket.secret_key);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut etags = Vec::new();
    for key in ["one/assets.csv", "two/assets.csv"] {
        let etag = rt.block_on(async {
            let up = s3.create_multipart_upload().bucket(&bucket.name).key(key).send().await.unwrap();
            let id = up.upload_id().unwrap().to_string();
            let mut done = Vec::new();
            for (n, chunk) in bytes.chunks(part).enumerate() {
                let n = n as i32 + 1;
                let p = s3
                    .upload_part()
                    .bucket(&bucket.name)
                    .key(key)
                    .upload_id(&id)
                    .part_number(n)
                    .body(chunk.to_vec().into())
                    .send()
                    .await
                    .unwrap();
                done.push(aws_sdk_s3::types::CompletedPart::builder().part_number(n).e_tag(p.e_tag().unwrap()).build());
            }
            let parts = aws_sdk_s3::types::CompletedMultipartUpload::builder().set_parts(Some(done)).build();
            // (moto answers with an XML root the SDK does not parse: the object is there all
            // the same, as HEAD shows.)
            let _ = s3.complete_multipart_upload().bucket(&bucket.name).key(key).upload_id(&id).multipart_upload(parts).send().await;
            let head = s3.head_object().bucket(&bucket.name).key(key).send().await.unwrap();
            head.e_tag().unwrap().to_string()
        });
        etags.push(etag);
    }
    assert!(etags[0].ends_with("-2\""), "not a two-part ETag: {}", etags[0]);
    let db = TestDb::new("multipart");
    let run = |file: &str| db.run_s3(&bucket, &["--stage", "assets", "--assets-file", file, "--output", "json", "-v"]);
    let out = run("one/assets.csv");
    out.expect_code(0);
    assert_eq!(db.count(&format!("SELECT count(*) FROM {}.asset", db.schema)), 80_000, "{}", out.evidence());
    // The same bytes under another key: the checked ETag names them, so nothing is read again.
    let out = run("two/assets.csv");
    out.expect_code(0);
    assert!(unchanged_since(&out).is_some(), "the same content under another key loaded again\n{}", out.evidence());
}
