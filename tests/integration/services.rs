//! The services the tests run against, started by scripts/services.sh: a real PostgreSQL and a
//! real S3-compatible server on loopback. These checks prove the scripts and the client wiring
//! (sqlx, aws-sdk-s3 with path-style and checksums only when required) before any ETL test uses
//! them.

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests with scripts/test.sh, which starts the services and sets it")
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn postgres_is_reachable_and_speaks_numeric_exactly() {
    let url = required("ETL_TEST_DATABASE_URL");
    runtime().block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"));
        let (v,): (rust_decimal::Decimal,) = sqlx::query_as("SELECT '123456789012345678.91'::numeric(20,2)")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(v.to_string(), "123456789012345678.91");
        let (host,): (String,) = sqlx::query_as("SELECT coalesce(host(inet_server_addr()), 'socket')").fetch_one(&pool).await.unwrap();
        assert_eq!(host, "127.0.0.1", "the test database listens on loopback");
    });
}

#[test]
fn s3_server_stores_and_returns_objects() {
    let endpoint = required("ETL_TEST_S3_ENDPOINT");
    assert!(endpoint.starts_with("http://127.0.0.1:"), "the S3 server listens on loopback: {endpoint}");
    let creds = Credentials::new(required("ETL_TEST_S3_ACCESS_KEY"), required("ETL_TEST_S3_SECRET_KEY"), None, None, "test");
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(creds)
        .force_path_style(true)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    let s3 = aws_sdk_s3::Client::from_conf(config);
    runtime().block_on(async {
        let bucket = format!("etl-services-{}", std::process::id());
        s3.create_bucket().bucket(&bucket).send().await.unwrap_or_else(|e| panic!("create bucket at {endpoint}: {e:?}"));
        let body = "id,name\n1,a\n";
        s3.put_object().bucket(&bucket).key("x.csv").body(ByteStream::from_static(body.as_bytes())).send().await.unwrap();
        let got = s3.get_object().bucket(&bucket).key("x.csv").send().await.unwrap();
        let bytes = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&bytes[..], body.as_bytes());
        s3.delete_object().bucket(&bucket).key("x.csv").send().await.unwrap();
        s3.delete_bucket().bucket(&bucket).send().await.unwrap();
        let seed_bucket = s3.head_bucket().bucket("fake-data-for-training").send().await;
        assert!(seed_bucket.is_ok(), "the seed's bucket exists: {seed_bucket:?}");
    });
}

/// The listening sockets on `port` of this machine, as (address, port) from /proc/net/tcp and
/// tcp6: the kernel's own view, whatever address a client dials.
#[cfg(target_os = "linux")]
fn listening(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (fields.get(1), fields.get(3)) else { continue };
            let Some((addr, p)) = local.split_once(':') else { continue };
            // 0A: LISTEN.
            if *state == "0A" && u16::from_str_radix(p, 16).ok() == Some(port) {
                out.push(addr.to_string());
            }
        }
    }
    out
}

#[cfg(target_os = "linux")]
#[test]
fn every_service_listens_on_loopback_only() {
    let url = required("ETL_TEST_DATABASE_URL");
    let listen: String = runtime().block_on(async {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query_scalar("SHOW listen_addresses").fetch_one(&pool).await.unwrap()
    });
    assert_eq!(listen, "127.0.0.1", "PostgreSQL's own listen_addresses");
    let port_of = |endpoint: &str| endpoint.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse::<u16>().ok()).unwrap();
    let pg_port: u16 = std::env::var("ETL_PG_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(15432);
    for (what, port) in [
        ("PostgreSQL", pg_port),
        ("the S3 server", port_of(&required("ETL_TEST_S3_ENDPOINT"))),
        ("the S3 server that checks credentials", port_of(&required("ETL_TEST_S3_AUTH_ENDPOINT"))),
    ] {
        let sockets = listening(port);
        assert!(!sockets.is_empty(), "{what}: nothing listens on port {port}");
        // 127.0.0.1 as /proc writes it (little-endian hex), and ::1.
        let loopback = ["0100007F", "00000000000000000000000001000000"];
        assert!(sockets.iter().all(|a| loopback.contains(&a.as_str())), "{what} listens beyond loopback on port {port}: {sockets:?}");
    }
}
