//! Test support (feature `test-utils`): an in-process S3 server, the choice of server for S3
//! tests, and a request-counting store wrapper.
//!
//! - [`S3Server`]: s3s-fs over a temp dir, served on a loopback port in this process, with fixed
//!   test credentials and its bucket created; stopped when dropped. `cargo test` needs nothing
//!   else to run objsync's S3 suite.
//! - [`TestS3`]: what an S3 test runs against. When [`TestS3::ENDPOINT_VAR`]
//!   (`PAGESTORE_S3_ENDPOINT`) is set — `cargo xtask test-all` sets it for the server it chose
//!   (`MinIO`, s3s-fs, or an endpoint you gave it), and you can set it yourself — the `AWS_*`
//!   environment describes that server ([`S3Config::from_env`]); otherwise an [`S3Server`] is
//!   started. Either way the test runs: nothing is skipped for want of a server.
//! - [`CountingStore`]: counts requests and the most in flight at once, from outside the code
//!   under test.
//! - [`pattern`]: deterministic test payloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use object_store::ObjectStore;
use object_store::path::Path;

use crate::S3Config;

mod counting;
mod server;

pub use counting::{CountingStore, RequestCounts};
pub use server::S3Server;

/// `len` bytes of a pseudo-random pattern fixed by `seed`: objects whose parts or ranges,
/// misplaced or mixed up with another object's, do not compare equal by accident.
#[must_use]
pub fn pattern(len: usize, seed: u64) -> Bytes {
    // splitmix64, eight bytes a step.
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// The error of [`TestS3::from_env_or_start`]: a malformed environment or a server that would
/// not start.
pub type TestS3Error = Box<dyn std::error::Error + Send + Sync>;

impl S3Server {
    /// The configuration of a client of this server: its endpoint (plain HTTP), bucket, region
    /// and test credentials.
    #[must_use]
    pub fn config(&self) -> S3Config {
        S3Config::new(Self::BUCKET)
            .with_endpoint(self.endpoint())
            .with_region(Self::REGION)
            .with_credentials(Self::ACCESS_KEY_ID, Self::SECRET_ACCESS_KEY)
            .with_allow_http(true)
    }
}

/// The S3 server a test runs against: an external one named by the environment, or an
/// in-process [`S3Server`] (kept running as long as this value lives).
#[derive(Debug)]
pub struct TestS3 {
    config: S3Config,
    description: String,
    /// The in-process server, when there was no external one.
    local: Option<S3Server>,
}

impl TestS3 {
    /// The variable that selects an external server, and holds its endpoint. Set explicitly so
    /// that `AWS_*` variables present for other reasons never send tests to a real account.
    pub const ENDPOINT_VAR: &'static str = "PAGESTORE_S3_ENDPOINT";
    /// An optional name for the external server (`minio`, `s3s-fs 0.14.1`, ...), for messages.
    pub const SERVER_VAR: &'static str = "PAGESTORE_S3_SERVER";

    /// The external server if [`ENDPOINT_VAR`](Self::ENDPOINT_VAR) is set (its endpoint from
    /// that variable; bucket, keys, region and `AWS_ALLOW_HTTP` from the `AWS_*` environment),
    /// else a freshly started in-process server.
    pub fn from_env_or_start() -> Result<Self, TestS3Error> {
        match std::env::var(Self::ENDPOINT_VAR) {
            Ok(endpoint) if !endpoint.trim().is_empty() => {
                let endpoint = endpoint.trim().to_owned();
                let config = S3Config::from_env()?.with_endpoint(&endpoint);
                let name = std::env::var(Self::SERVER_VAR).unwrap_or_else(|_| "external".into());
                Ok(Self {
                    description: format!("{name} at {endpoint}, bucket {}", config.bucket()),
                    config,
                    local: None,
                })
            }
            Ok(_) | Err(std::env::VarError::NotPresent) => {
                let server = S3Server::start()?;
                Ok(Self {
                    description: format!(
                        "in-process s3s-fs at {}, bucket {}",
                        server.endpoint(),
                        S3Server::BUCKET
                    ),
                    config: server.config(),
                    local: Some(server),
                })
            }
            Err(err @ std::env::VarError::NotUnicode(_)) => {
                Err(format!("{}: {err}", Self::ENDPOINT_VAR).into())
            }
        }
    }

    /// The client configuration for the server.
    #[must_use]
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// A new S3 store on the server's bucket.
    pub fn store(&self) -> crate::Result<Arc<dyn ObjectStore>> {
        self.config.build()
    }

    /// Which server this is, for messages: `in-process s3s-fs at http://127.0.0.1:41234, bucket
    /// objsync-test`.
    #[must_use]
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Whether the server is external (named by the environment) rather than in-process.
    #[must_use]
    pub fn is_external(&self) -> bool {
        self.local.is_none()
    }

    /// The in-process server, if that is what this is.
    #[must_use]
    pub fn local(&self) -> Option<&S3Server> {
        self.local.as_ref()
    }

    /// A prefix no other test or run uses: `objsync-tests/<scenario>/<pid>-<time>-<n>`. An
    /// external bucket outlives the run, so every test writes under one of these.
    #[must_use]
    pub fn unique_prefix(&self, scenario: &str) -> Path {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Path::from(format!(
            "objsync-tests/{scenario}/{}-{nanos}-{n}",
            std::process::id()
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use object_store::{ObjectStoreExt as _, PutPayload};

    use super::*;

    #[tokio::test]
    async fn the_server_serves_its_bucket_to_its_credentials_only() {
        let server = S3Server::start().unwrap();
        let store = server.config().build().unwrap();
        let path = Path::from("dir/object");
        store
            .put(&path, PutPayload::from_static(b"hello"))
            .await
            .unwrap();
        let got = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"hello");
        // s3s-fs keeps objects as files under the bucket's directory.
        let file = server.data_dir().join(S3Server::BUCKET).join("dir/object");
        assert_eq!(std::fs::read(file).unwrap(), b"hello");

        let intruder = S3Config::new(S3Server::BUCKET)
            .with_endpoint(server.endpoint())
            .with_credentials(S3Server::ACCESS_KEY_ID, "not-the-secret")
            .with_allow_http(true)
            .with_client_max_retries(0)
            .build()
            .unwrap();
        assert!(
            intruder.get(&path).await.is_err(),
            "a wrong secret is refused"
        );
        let other_bucket = S3Config::new("no-such-bucket")
            .with_endpoint(server.endpoint())
            .with_credentials(S3Server::ACCESS_KEY_ID, S3Server::SECRET_ACCESS_KEY)
            .with_allow_http(true)
            .with_client_max_retries(0)
            .build()
            .unwrap();
        // s3s-fs makes missing directories on PUT, but a LIST needs the bucket to exist.
        assert!(store.list_with_delimiter(None).await.is_ok());
        assert!(
            other_bucket.list_with_delimiter(None).await.is_err(),
            "only the created bucket exists"
        );
    }

    #[test]
    fn dropping_the_server_stops_it_and_removes_its_files() {
        let server = S3Server::start().unwrap();
        let addr = server.addr();
        let dir = server.data_dir().to_owned();
        assert!(TcpStream::connect(addr).is_ok());
        drop(server);
        assert!(
            TcpStream::connect(addr).is_err(),
            "nothing listens any more"
        );
        assert!(!dir.exists());
    }

    #[test]
    fn debug_output_has_no_credentials() {
        let server = S3Server::start().unwrap();
        let shown = format!("{server:?} {:?}", server.config());
        assert!(!shown.contains(S3Server::SECRET_ACCESS_KEY), "{shown}");
        assert!(!shown.contains(S3Server::ACCESS_KEY_ID), "{shown}");
    }

    #[test]
    fn patterns_are_fixed_by_their_seed() {
        assert_eq!(pattern(1000, 7), pattern(1000, 7));
        assert_ne!(pattern(1000, 7), pattern(1000, 8));
        assert_eq!(pattern(13, 7).len(), 13);
        assert_eq!(pattern(13, 7), pattern(1000, 7).slice(..13));
    }

    #[test]
    fn unique_prefixes_differ() {
        let s3 = TestS3 {
            config: S3Config::new("b"),
            description: String::new(),
            local: None,
        };
        assert_ne!(s3.unique_prefix("x"), s3.unique_prefix("x"));
        assert!(
            s3.unique_prefix("x")
                .as_ref()
                .starts_with("objsync-tests/x/")
        );
    }
}
