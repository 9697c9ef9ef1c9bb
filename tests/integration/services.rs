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
