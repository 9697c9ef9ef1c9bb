//! S3 sources: a client per connection (endpoint override, path-style, region, credentials from
//! the spec, the environment or the AWS chain, the SDK's retries), and the download of an object
//! to a local file in chunks, so memory does not grow with the file. The ETag read first must
//! still match when the body is fetched: an object replaced in between is an error, never a
//! half-old, half-new load.

use std::path::{Path, PathBuf};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use tokio::io::AsyncWriteExt;

use crate::exec::error::ExecError;
use crate::spec::model::{ChecksumMode, S3Connection};

/// An endpoint as a URL: a bare `host:port` means http, as the seed's MinIO settings wrote it.
pub fn endpoint_url(endpoint: &str) -> String {
    let e = endpoint.trim().trim_end_matches('/');
    if e.contains("://") { e.to_string() } else { format!("http://{e}") }
}

/// An S3 connection ready to download.
#[derive(Clone)]
pub struct S3 {
    client: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    /// The endpoint, for messages.
    pub endpoint: String,
}

/// A downloaded object.
#[derive(Debug)]
pub struct Fetched {
    /// Where it is now.
    pub path: PathBuf,
    /// `s3://bucket/key`.
    pub shown: String,
    /// Its size.
    pub bytes: u64,
    /// Its ETag.
    pub etag: Option<String>,
    /// The SHA-256 of the bytes received.
    pub sha256: String,
    /// Whether the ETag is an MD5 the bytes received match (whole, or part by part), so it names
    /// the content wherever it is.
    pub etag_is_md5: bool,
}

/// An object a listing found.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its key, relative to the connection's prefix.
    pub key: String,
    /// Its ETag.
    pub etag: Option<String>,
    /// Its size.
    pub bytes: u64,
}

/// An object as HEAD found it.
#[derive(Debug, Clone)]
pub struct Head {
    /// `s3://bucket/key`.
    pub shown: String,
    /// Its ETag.
    pub etag: Option<String>,
    /// Its size.
    pub bytes: u64,
    /// Its source digest (none without an ETag): see `fingerprint::s3_object`.
    pub fingerprint: Option<String>,
    /// Its keyed source digest: see `fingerprint::s3_keyed`.
    pub keyed: Option<String>,
}

impl S3 {
    /// Builds the client. Credentials: the spec's keys if given, else the environment and the
    /// standard AWS chain (profiles, SSO, instance roles).
    pub async fn connect(c: &S3Connection) -> S3 {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(r) = &c.region {
            loader = loader.region(Region::new(r.clone()));
        }
        let shared = loader.load().await;
        let mut b = aws_sdk_s3::config::Builder::from(&shared);
        if shared.region().is_none() {
            b = b.region(Region::new("us-east-1"));
        }
        let custom = c.endpoint.is_some();
        if let Some(e) = &c.endpoint {
            b = b.endpoint_url(endpoint_url(e));
        }
        b = b.force_path_style(c.path_style.unwrap_or(custom));
        if let (Some(id), Some(secret)) = (&c.access_key_id, &c.secret_access_key) {
            let token = c.session_token.as_ref().map(|t| t.expose().to_string());
            b = b.credentials_provider(Credentials::new(id, secret.expose(), token, None, "etl-spec"));
        }
        // Many S3-compatible servers reject the checksums AWS SDKs send by default since 2025.
        let mode = c.checksums.unwrap_or(if custom { ChecksumMode::WhenRequired } else { ChecksumMode::WhenSupported });
        b = match mode {
            ChecksumMode::WhenRequired => b
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired),
            ChecksumMode::WhenSupported => b
                .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
                .response_checksum_validation(ResponseChecksumValidation::WhenSupported),
        };
        let endpoint = c.endpoint.as_deref().map(endpoint_url).unwrap_or_else(|| "AWS S3".into());
        S3 {
            client: aws_sdk_s3::Client::from_conf(b.build()),
            bucket: c.bucket.clone(),
            prefix: c.prefix.clone().unwrap_or_default(),
            endpoint,
        }
    }

    /// The object key of a stage's source key.
    pub fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    /// Downloads `key` into `dir`: the version its HEAD finds, whatever is written meanwhile.
    pub async fn fetch(&self, key: &str, dir: &Path) -> Result<Fetched, ExecError> {
        let etag = self.etag(key).await?;
        self.fetch_pinned(key, dir, etag, &Default::default(), None).await
    }

    /// The ETag of `key` now.
    pub async fn etag(&self, key: &str) -> Result<Option<String>, ExecError> {
        Ok(self.head(key).await?.etag)
    }

    /// What HEAD tells of `key` now: its ETag, size and the digest of both.
    pub async fn head(&self, key: &str) -> Result<Head, ExecError> {
        let key = self.key(key);
        let head = self.client.head_object().bucket(&self.bucket).key(&key).send().await.map_err(|e| self.fail(&key, explain(&e)))?;
        let etag = head.e_tag().map(str::to_string);
        let bytes = head.content_length().unwrap_or(0).max(0) as u64;
        let fingerprint = crate::exec::reuse::fingerprint::s3_object(&self.origin(), &key, etag.as_deref(), bytes);
        let keyed = crate::exec::reuse::fingerprint::s3_keyed(&self.origin(), &key, etag.as_deref(), bytes);
        Ok(Head { shown: format!("s3://{}/{key}", self.bucket), etag, bytes, fingerprint, keyed })
    }

    /// Every object whose key (relative to the connection's prefix) starts with `prefix`, in
    /// key order: ListObjectsV2, every page.
    pub async fn list(&self, prefix: &str) -> Result<Vec<Listed>, ExecError> {
        let full = self.key(prefix);
        let mut pages = self.client.list_objects_v2().bucket(&self.bucket).prefix(&full).into_paginator().send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail(&format!("{full}*"), explain(&e)))?;
            for o in page.contents() {
                let Some(key) = o.key() else { continue };
                let Some(relative) = key.strip_prefix(&self.prefix) else { continue };
                out.push(Listed { key: relative.to_string(), etag: o.e_tag().map(str::to_string), bytes: o.size().unwrap_or(0).max(0) as u64 });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Where the connection's objects are, for the file ledger: endpoint and bucket.
    pub fn origin(&self) -> String {
        format!("{}/{}", self.endpoint, self.bucket)
    }

    /// `s3://bucket/key` of a key relative to the connection's prefix.
    pub fn shown(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(key))
    }

    fn fail(&self, key: &str, message: String) -> ExecError {
        ExecError::Source { source_name: format!("s3://{}/{key} at {}", self.bucket, self.endpoint), message }
    }

    /// Downloads `key` into `dir` if its ETag is still `etag`: an object replaced since is an
    /// error, never a mix of two versions.
    /// With `tee`, each chunk is also sent there as it arrives (a receiver gone is no error).
    pub async fn fetch_pinned(
        &self,
        key: &str,
        dir: &Path,
        etag: Option<String>,
        meter: &crate::exec::progress::Meter,
        tee: Option<&std::sync::mpsc::SyncSender<Vec<u8>>>,
    ) -> Result<Fetched, ExecError> {
        let key = self.key(key);
        let shown = format!("s3://{}/{}", self.bucket, key);
        let fail = |e: String| self.fail(&key, e);
        let mut get = self.client.get_object().bucket(&self.bucket).key(&key);
        if let Some(t) = &etag {
            get = get.if_match(t);
        }
        let mut obj = get.send().await.map_err(|e| {
            if e.raw_response().is_some_and(|r| r.status().as_u16() == 412) {
                fail("the object changed while it was being read; run again".into())
            } else {
                fail(explain(&e))
            }
        })?;
        let expected = obj.content_length().map(|n| n.max(0) as u64);
        // An ETag shaped like an MD5 is checked against the bytes: a multipart one part by part,
        // the part size read from HEAD of part 1.
        let md5 = match etag.as_deref().and_then(crate::exec::reuse::fingerprint::md5_parts) {
            Some(0) => Some(crate::exec::reuse::fingerprint::Md5Etag::new(None)),
            Some(_) => self.part_size(&key).await.map(|n| crate::exec::reuse::fingerprint::Md5Etag::new(Some(n))),
            None => None,
        };
        let path = dir.join(super::spool_name("s3", &[&self.endpoint, &self.bucket, &key]));
        let mut file = tokio::fs::File::create(&path).await.map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        let mut bytes = 0u64;
        // The bytes are hashed on a thread of their own as they arrive, while this one receives
        // and writes the next (hashing in line took as long as the transfer from a local server).
        let (to_digests, digests) = hash_apart(md5);
        while let Some(chunk) = obj.body.try_next().await.map_err(|e| fail(format!("the download broke off: {}", causes(&e))))? {
            bytes += chunk.len() as u64;
            meter.add(chunk.len() as u64);
            if to_digests.send(chunk.clone()).await.is_err() {
                return Err(fail("the thread hashing the download stopped".into()));
            }
            file.write_all(&chunk).await.map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
            if let Some(t) = tee {
                let _ = t.send(chunk.to_vec());
            }
        }
        drop(to_digests);
        file.flush().await.map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        if let Some(n) = expected
            && n != bytes {
                return Err(fail(format!("received {bytes} of {n} bytes")));
            }
        let (sha, md5) = digests.join().map_err(|_| fail("the thread hashing the download panicked".into()))?;
        let sha256 = sha.iter().map(|b| format!("{b:02x}")).collect();
        let etag_is_md5 = match (md5, etag.as_deref()) {
            (Some(m), Some(t)) => m.matches(t),
            _ => false,
        };
        Ok(Fetched { path, shown, bytes, etag, sha256, etag_is_md5 })
    }

    /// The first `max` bytes of `key` (all of it when smaller) into a file in `dir`, cut after
    /// its last whole line when the object is longer: a sample, e.g. for `etl init`.
    pub async fn sample(&self, key: &str, dir: &Path, max: u64) -> Result<(PathBuf, u64), ExecError> {
        let head = self.head(key).await?;
        let key = self.key(key);
        let fail = |e: String| self.fail(&key, e);
        let get = self.client.get_object().bucket(&self.bucket).key(&key);
        let get = if head.bytes > max { get.range(format!("bytes=0-{}", max.saturating_sub(1))) } else { get };
        let obj = get.send().await.map_err(|e| fail(explain(&e)))?;
        let mut bytes = obj.body.collect().await.map_err(|e| fail(format!("the download broke off: {}", causes(&e))))?.to_vec();
        if head.bytes > bytes.len() as u64
            && let Some(end) = bytes.iter().rposition(|b| *b == b'\n')
        {
            bytes.truncate(end + 1);
        }
        let name = key.rsplit('/').next().unwrap_or("sample.csv");
        let path = dir.join(name);
        tokio::fs::write(&path, &bytes).await.map_err(|e| fail(format!("cannot write {}: {e}", path.display())))?;
        Ok((path, head.bytes))
    }

    /// The size of part 1 of a multipart object (HEAD with `partNumber=1`): the size of every
    /// part but the last. Not pinned to the ETag (some servers compare `If-Match` with the
    /// part's own): a size read from a replaced object only fails the check. None where the
    /// server does not tell.
    async fn part_size(&self, key: &str) -> Option<u64> {
        let head = self.client.head_object().bucket(&self.bucket).key(key).part_number(1);
        head.send().await.ok()?.content_length().filter(|n| *n > 0).map(|n| n as u64)
    }
}

/// A download's SHA-256, and its ETag's MD5 when the ETag is one.
type Digests = (sha2::digest::Output<sha2::Sha256>, Option<crate::exec::reuse::fingerprint::Md5Etag>);

/// The digests of a download's bytes, taken on a thread of their own: the chunks sent are
/// hashed in order; the thread ends with them once the sender is dropped.
fn hash_apart<B: AsRef<[u8]> + Send + 'static>(
    mut md5: Option<crate::exec::reuse::fingerprint::Md5Etag>,
) -> (tokio::sync::mpsc::Sender<B>, std::thread::JoinHandle<Digests>) {
    let (send, mut chunks) = tokio::sync::mpsc::channel::<B>(64);
    let hashing = std::thread::spawn(move || {
        let mut sha = <sha2::Sha256 as sha2::Digest>::new();
        while let Some(chunk) = chunks.blocking_recv() {
            sha2::Digest::update(&mut sha, chunk.as_ref());
            if let Some(m) = md5.as_mut() {
                m.update(chunk.as_ref());
            }
        }
        (sha2::Digest::finalize(sha), md5)
    });
    (send, hashing)
}

/// An error and its causes on one line: "streaming error: ...: end of file before message
/// length reached".
fn causes(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line = format!("{line}: {text}");
        }
        next = cause.source();
    }
    line
}

/// Whether an error's causes are about loading credentials (the SDK's credential chain found
/// none, or a provider failed) rather than reaching the server.
fn about_credentials(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string().to_ascii_lowercase();
        if text.contains("credential") || text.contains("resolve identity") || text.contains("no identity") {
            return true;
        }
        cause = c.source();
    }
    false
}

/// One line saying why an S3 call failed, in the user's terms.
fn explain<E: ProvideErrorMetadata + std::error::Error + 'static>(e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> String {
    match e {
        // No credentials fail before anything is sent, as a dispatch failure: say so.
        SdkError::DispatchFailure(_) if about_credentials(e) => "no S3 credentials were found: set the connection's `access_key_id` and \
             `secret_access_key`, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or an AWS profile (AWS_PROFILE)"
            .into(),
        SdkError::DispatchFailure(d) => {
            let why = if d.is_timeout() { "timed out" } else if d.is_io() { "connection failed" } else { "could not send the request" };
            format!("cannot reach the endpoint ({why}); is the S3 server running and the endpoint right?")
        }
        SdkError::TimeoutError(_) => "the request timed out".into(),
        SdkError::ServiceError(s) => {
            let err = s.err();
            let code = err.code().unwrap_or("");
            let status = s.raw().status().as_u16();
            match (code, status) {
                ("NoSuchKey", _) | ("NotFound", _) | (_, 404) => "no such object (or no such bucket)".into(),
                ("NoSuchBucket", _) => "no such bucket".into(),
                ("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "AccessDenied", _) | (_, 401 | 403) => {
                    format!("access denied ({}): check the access key and secret", if code.is_empty() { status.to_string() } else { code.to_string() })
                }
                _ => format!("{} (HTTP {status})", err.message().unwrap_or(code)),
            }
        }
        other => other.to_string(),
    }
}
