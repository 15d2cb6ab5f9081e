//! The object store behind the demo's object sections: `object_store`'s `InMemory` by default,
//! or, with `--s3`, the S3 server (`MinIO`, s3s-fs, ...) named by the environment.
//!
//! An S3 bucket outlives the demo, so each run writes under a prefix of its own
//! (`pagestore-demo/<pid>-<nanoseconds>-<n>`) and deletes what is under it at the end.
//!
//! An S3 store is built afresh for each user ([`Remote::store`]): its HTTP client keeps pooled
//! connections that belong to the tokio runtime they were made on, and the demo's sections each
//! run on a runtime of their own, which is gone by the time the next section starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _};
use objsync::S3Config;

use crate::s3::{BUCKET_VARS, ENDPOINT_VARS};

/// Where the object sections keep their objects.
#[derive(Debug)]
pub struct Remote {
    backend: Backend,
    /// The run's prefix: every object of the run is under it.
    prefix: String,
}

#[derive(Debug)]
enum Backend {
    /// One in-memory store shared by every section (a new one would be empty).
    Memory(Arc<InMemory>),
    /// An S3 bucket; `endpoint` is for display.
    S3 {
        config: Box<S3Config>,
        endpoint: String,
    },
}

impl Remote {
    /// An embedded `InMemory` store.
    pub fn in_memory() -> Self {
        Self {
            backend: Backend::Memory(Arc::new(InMemory::new())),
            prefix: "demo".to_owned(),
        }
    }

    /// The S3 server named by the process environment (see [`s3_config`]).
    pub fn s3_from_env() -> anyhow::Result<Self> {
        let (config, endpoint) = s3_config(|name| std::env::var(name).ok())?;
        Ok(Self::s3(config, endpoint))
    }

    /// The S3 bucket of `config`, under a prefix no other run uses.
    pub fn s3(config: S3Config, endpoint: String) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Self {
            backend: Backend::S3 {
                config: Box::new(config),
                endpoint,
            },
            prefix: format!("pagestore-demo/{}-{nanos}-{n}", std::process::id()),
        }
    }

    /// Whether this is an S3 bucket (whose objects outlive the run unless deleted).
    pub fn is_s3(&self) -> bool {
        matches!(self.backend, Backend::S3 { .. })
    }

    /// A store to use. For S3, a new client each call (see the module docs).
    pub fn store(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        match &self.backend {
            Backend::Memory(store) => Ok(Arc::clone(store) as Arc<dyn ObjectStore>),
            Backend::S3 { config, .. } => config.build().context("building the S3 store"),
        }
    }

    /// The prefix for `section`'s objects: `<run prefix>/<section>`.
    pub fn prefix(&self, section: &str) -> String {
        format!("{}/{section}", self.prefix)
    }

    /// One line saying which store this is, for the console.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Memory(_) => "object_store InMemory (embedded)".to_owned(),
            Backend::S3 { config, endpoint } => format!(
                "S3 at {endpoint}, bucket {}, under {}/",
                config.bucket(),
                self.prefix
            ),
        }
    }

    /// Deletes every object under the run's prefix and returns how many there were. Nothing to
    /// do for the in-memory store, which goes away with the process.
    pub fn cleanup(&self) -> anyhow::Result<usize> {
        if !self.is_s3() {
            return Ok(0);
        }
        let store = self.store()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting a tokio runtime")?;
        let root = Path::parse(&self.prefix).context("the run's prefix")?;
        runtime.block_on(delete_tree(store.as_ref(), root))
    }
}

/// Deletes every object under `root`, returning how many.
async fn delete_tree(store: &dyn ObjectStore, root: Path) -> anyhow::Result<usize> {
    let objects = list_tree(store, root).await?;
    for object in &objects {
        store
            .delete(object)
            .await
            .with_context(|| format!("deleting {object}"))?;
    }
    Ok(objects.len())
}

/// Every object under `root`, listed a folder at a time (which every S3 server supports).
pub async fn list_tree(store: &dyn ObjectStore, root: Path) -> anyhow::Result<Vec<Path>> {
    let mut folders = vec![root];
    let mut objects = Vec::new();
    while let Some(folder) = folders.pop() {
        let listing = store
            .list_with_delimiter(Some(&folder))
            .await
            .with_context(|| format!("listing {folder}"))?;
        objects.extend(listing.objects.into_iter().map(|o| o.location));
        folders.extend(listing.common_prefixes);
    }
    Ok(objects)
}

/// The S3 configuration `--s3` uses, from variables looked up by `var`: the endpoint from
/// `PAGESTORE_S3_ENDPOINT`, `AWS_ENDPOINT` or `AWS_ENDPOINT_URL` (as `test-all` reads them), and the bucket, keys and the
/// rest from the `AWS_*` variables that `objsync::S3Config::from_env` reads. An `http://`
/// endpoint allows plain HTTP unless `AWS_ALLOW_HTTP` says otherwise, as `test-all` does.
///
/// The endpoint, the bucket and both keys are required: without them the error names every
/// variable that is missing. Returns the configuration and the endpoint.
pub fn s3_config(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<(S3Config, String)> {
    let get = |name: &str| var(name).filter(|value| !value.trim().is_empty());
    let first = |names: &[&str]| names.iter().find_map(|name| get(name));
    let endpoint = first(ENDPOINT_VARS);
    let mut missing = Vec::new();
    if endpoint.is_none() {
        missing.push("PAGESTORE_S3_ENDPOINT (or AWS_ENDPOINT_URL)");
    }
    if first(BUCKET_VARS).is_none() {
        missing.push("AWS_BUCKET");
    }
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        if get(key).is_none() {
            missing.push(key);
        }
    }
    let Some(endpoint) = endpoint.filter(|_| missing.is_empty()) else {
        bail!(
            "--s3 needs an S3 server in the environment, and {} not set; for a local MinIO, \
             say: PAGESTORE_S3_ENDPOINT=http://127.0.0.1:9000 AWS_BUCKET=<bucket> \
             AWS_ACCESS_KEY_ID=<key> AWS_SECRET_ACCESS_KEY=<secret> cargo xtask demo --s3",
            match missing.as_slice() {
                [one] => format!("{one} is"),
                many => format!("{} are", many.join(", ")),
            }
        );
    };
    let endpoint = endpoint.trim().to_owned();
    let mut config = S3Config::from_vars(|name| get(name))
        .context("reading the S3 settings from the environment")?
        .with_endpoint(&endpoint);
    if endpoint.to_ascii_lowercase().starts_with("http://") && get("AWS_ALLOW_HTTP").is_none() {
        config = config.with_allow_http(true);
    }
    Ok((config, endpoint))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn missing_variables_are_all_named() {
        let err = s3_config(lookup(&[])).unwrap_err().to_string();
        for name in [
            "PAGESTORE_S3_ENDPOINT",
            "AWS_BUCKET",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
        ] {
            assert!(err.contains(name), "{err}");
        }
        let err = s3_config(lookup(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_BUCKET", "b"),
            ("AWS_ACCESS_KEY_ID", "k"),
            ("AWS_SECRET_ACCESS_KEY", " "),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY is not set"), "{err}");
        assert!(!err.contains("AWS_BUCKET,"), "{err}");
    }

    #[test]
    fn endpoint_variables_and_plain_http() {
        let (config, endpoint) = s3_config(lookup(&[
            ("PAGESTORE_S3_ENDPOINT", "http://127.0.0.1:9000"),
            ("AWS_ENDPOINT_URL", "http://elsewhere:9000"),
            ("AWS_BUCKET_NAME", "bucket"),
            ("AWS_ACCESS_KEY_ID", "key"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ]))
        .unwrap();
        assert_eq!(endpoint, "http://127.0.0.1:9000");
        assert_eq!(config.endpoint(), Some("http://127.0.0.1:9000"));
        assert_eq!(config.bucket(), "bucket");
        assert!(config.allow_http() && config.has_credentials());

        let (config, _) = s3_config(lookup(&[
            ("AWS_ENDPOINT", "http://127.0.0.1:9000"),
            ("AWS_BUCKET", "bucket"),
            ("AWS_ACCESS_KEY_ID", "key"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ALLOW_HTTP", "false"),
        ]))
        .unwrap();
        assert!(!config.allow_http(), "an explicit AWS_ALLOW_HTTP wins");
        assert!(config.build().is_err(), "and plain HTTP is then refused");
    }

    #[test]
    fn runs_get_prefixes_of_their_own() {
        let a = Remote::s3(S3Config::new("b"), "http://x".into());
        let b = Remote::s3(S3Config::new("b"), "http://x".into());
        assert_ne!(a.prefix("pages"), b.prefix("pages"));
        assert!(a.prefix("pages").starts_with("pagestore-demo/"));
        assert!(a.is_s3() && !Remote::in_memory().is_s3());
    }
}
