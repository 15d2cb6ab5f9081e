//! Building an S3 (or S3-compatible: `MinIO`, s3s, R2, …) store.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{ClientOptions, ObjectStore, RetryConfig as ClientRetryConfig};

use crate::{Error, Result};

/// Where and how to reach an S3 bucket.
///
/// Built explicitly with [`S3Config::new`] and the `with_*` methods, or from the standard
/// `AWS_*` environment with [`S3Config::from_env`]; [`build`](Self::build) makes the store.
///
/// The access key id and the secret never leave this struct except into the S3 client: `Debug`
/// shows them as `<redacted>`, errors name settings rather than values, and nothing here logs.
///
/// objsync's [`Uploader`](crate::Uploader) and [`Downloader`](crate::Downloader) retry whole
/// operations with their own backoff and counters, so the client's own retries default to 2
/// (for connection hiccups within one attempt); see
/// [`with_client_max_retries`](Self::with_client_max_retries).
#[derive(Clone)]
pub struct S3Config {
    endpoint: Option<String>,
    bucket: String,
    region: String,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    allow_http: bool,
    virtual_hosted_style: bool,
    client_max_retries: usize,
    request_timeout: Duration,
    connect_timeout: Duration,
}

/// The variables [`S3Config::from_env`] reads, first match wins within a row.
const ENDPOINT_VARS: [&str; 2] = ["AWS_ENDPOINT_URL", "AWS_ENDPOINT"];
const BUCKET_VARS: [&str; 2] = ["AWS_BUCKET", "AWS_BUCKET_NAME"];
const REGION_VARS: [&str; 2] = ["AWS_REGION", "AWS_DEFAULT_REGION"];

impl S3Config {
    /// A configuration for `bucket` on AWS (region `us-east-1`), with no credentials yet.
    #[must_use]
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            endpoint: None,
            bucket: bucket.into(),
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: false,
            virtual_hosted_style: false,
            client_max_retries: 2,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// Reads the standard environment:
    ///
    /// | setting | variables |
    /// | --- | --- |
    /// | endpoint | `AWS_ENDPOINT_URL`, else `AWS_ENDPOINT` (optional: AWS when unset) |
    /// | bucket | `AWS_BUCKET`, else `AWS_BUCKET_NAME` (required) |
    /// | region | `AWS_REGION`, else `AWS_DEFAULT_REGION` (default `us-east-1`) |
    /// | credentials | `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY`, optional `AWS_SESSION_TOKEN` |
    /// | plain HTTP | `AWS_ALLOW_HTTP` = `true`/`1`/`yes` or `false`/`0`/`no` (default false) |
    /// | path style | `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` = a boolean (default false: path-style) |
    ///
    /// Empty variables count as unset. Errors name the variable, never its value.
    pub fn from_env() -> Result<Self> {
        let mut invalid = None;
        let config = Self::from_vars(|name| match std::env::var(name) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                invalid.get_or_insert(name.to_owned());
                None
            }
        });
        if let Some(name) = invalid {
            // `name` is one of the constant names below; find its `'static` spelling.
            let var = ALL_VARS
                .iter()
                .find(|v| **v == name)
                .copied()
                .unwrap_or("AWS_*");
            return Err(Error::Env {
                var,
                reason: "is not valid UTF-8",
            });
        }
        config
    }

    /// As [`from_env`](Self::from_env), with variables looked up by `var` (a map in tests, say).
    pub fn from_vars(mut var: impl FnMut(&str) -> Option<String>) -> Result<Self> {
        let mut first = |names: &[&str]| {
            names
                .iter()
                .find_map(|name| var(name).filter(|value| !value.trim().is_empty()))
        };
        let Some(bucket) = first(&BUCKET_VARS) else {
            return Err(Error::Env {
                var: "AWS_BUCKET or AWS_BUCKET_NAME",
                reason: "is not set",
            });
        };
        let mut config = Self::new(bucket.trim());
        config.endpoint = first(&ENDPOINT_VARS).map(|e| e.trim().to_owned());
        if let Some(region) = first(&REGION_VARS) {
            region.trim().clone_into(&mut config.region);
        }
        let key_id = first(&["AWS_ACCESS_KEY_ID"]);
        let secret = first(&["AWS_SECRET_ACCESS_KEY"]);
        match (key_id, secret) {
            (Some(key_id), Some(secret)) => {
                config.access_key_id = Some(key_id);
                config.secret_access_key = Some(secret);
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(Error::Env {
                    var: "AWS_SECRET_ACCESS_KEY",
                    reason: "is not set, but AWS_ACCESS_KEY_ID is",
                });
            }
            (None, Some(_)) => {
                return Err(Error::Env {
                    var: "AWS_ACCESS_KEY_ID",
                    reason: "is not set, but AWS_SECRET_ACCESS_KEY is",
                });
            }
        }
        config.session_token = first(&["AWS_SESSION_TOKEN"]);
        if let Some(value) = first(&["AWS_ALLOW_HTTP"]) {
            config.allow_http = parse_bool(&value).ok_or(Error::Env {
                var: "AWS_ALLOW_HTTP",
                reason: "is not a boolean (true/false, 1/0, yes/no)",
            })?;
        }
        if let Some(value) = first(&["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"]) {
            config.virtual_hosted_style = parse_bool(&value).ok_or(Error::Env {
                var: "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
                reason: "is not a boolean (true/false, 1/0, yes/no)",
            })?;
        }
        Ok(config)
    }

    /// Sets the endpoint URL, e.g. `http://127.0.0.1:9000` for `MinIO`. Without one, AWS.
    #[must_use]
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets the region (default `us-east-1`; S3-compatible servers mostly ignore it).
    #[must_use]
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Sets static credentials.
    #[must_use]
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(secret_access_key.into());
        self
    }

    /// Sets a session token to go with the credentials.
    #[must_use]
    pub fn with_session_token(mut self, token: impl Into<String>) -> Self {
        self.session_token = Some(token.into());
        self
    }

    /// Allows a plain `http://` endpoint (default false).
    #[must_use]
    pub fn with_allow_http(mut self, allow_http: bool) -> Self {
        self.allow_http = allow_http;
        self
    }

    /// Uses virtual-hosted-style URLs (`bucket.host`) instead of path-style (`host/bucket`,
    /// the default, which local servers need).
    #[must_use]
    pub fn with_virtual_hosted_style(mut self, virtual_hosted_style: bool) -> Self {
        self.virtual_hosted_style = virtual_hosted_style;
        self
    }

    /// Sets how often the HTTP client itself retries one request (default 2; 0 leaves all
    /// retrying to objsync).
    #[must_use]
    pub fn with_client_max_retries(mut self, retries: usize) -> Self {
        self.client_max_retries = retries;
        self
    }

    /// Sets the timeout of one HTTP request (default 30 s).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the connect timeout (default 5 s).
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The endpoint, if one is set.
    #[must_use]
    pub fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }

    /// The bucket.
    #[must_use]
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The region.
    #[must_use]
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Whether plain HTTP is allowed.
    #[must_use]
    pub fn allow_http(&self) -> bool {
        self.allow_http
    }

    /// Whether static credentials are set (they themselves are not readable).
    #[must_use]
    pub fn has_credentials(&self) -> bool {
        self.access_key_id.is_some()
    }

    /// Builds the store. Checks the settings first: a bucket, an `http(s)://` endpoint without
    /// user info in it, `allow_http` for an `http://` endpoint, and both halves of the
    /// credentials or neither.
    ///
    /// Show the store with `Display` (`AmazonS3(bucket)`), as objsync's own `Debug` output
    /// does: `object_store`'s `Debug` of it includes the access key id (never the secret).
    pub fn build(&self) -> Result<Arc<dyn ObjectStore>> {
        self.validate()?;
        install_crypto_provider();
        let client = ClientOptions::new()
            .with_allow_http(self.allow_http)
            .with_timeout(self.request_timeout)
            .with_connect_timeout(self.connect_timeout);
        let retry = ClientRetryConfig {
            max_retries: self.client_max_retries,
            ..ClientRetryConfig::default()
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&self.bucket)
            .with_region(&self.region)
            .with_allow_http(self.allow_http)
            .with_virtual_hosted_style_request(self.virtual_hosted_style)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let (Some(key_id), Some(secret)) = (&self.access_key_id, &self.secret_access_key) {
            builder = builder
                .with_access_key_id(key_id)
                .with_secret_access_key(secret);
        }
        if let Some(token) = &self.session_token {
            builder = builder.with_token(token);
        }
        let store = builder.build().map_err(|source| Error::Build {
            bucket: self.bucket.clone(),
            source,
        })?;
        Ok(Arc::new(store))
    }

    fn validate(&self) -> Result<()> {
        let bad = |field, reason: &str| {
            Err(Error::InvalidConfig {
                field,
                reason: reason.to_owned(),
            })
        };
        if self.bucket.trim().is_empty() {
            return bad("S3Config::bucket", "is empty");
        }
        if let Some(endpoint) = &self.endpoint {
            let Some((scheme, rest)) = endpoint.split_once("://") else {
                return bad("S3Config::endpoint", "is not an http:// or https:// URL");
            };
            // No S3 endpoint has user info; '@' anywhere means someone put credentials in the
            // URL (and a secret may contain '/', so the authority's end cannot be trusted).
            if rest.contains('@') {
                return bad(
                    "S3Config::endpoint",
                    "carries user info (credentials belong in with_credentials)",
                );
            }
            if rest
                .split(['/', '?', '#'])
                .next()
                .unwrap_or_default()
                .is_empty()
            {
                return bad("S3Config::endpoint", "has no host");
            }
            match scheme.to_ascii_lowercase().as_str() {
                "https" => {}
                "http" if self.allow_http => {}
                "http" => {
                    return bad(
                        "S3Config::endpoint",
                        "is http:// but plain HTTP is not allowed (with_allow_http(true) or \
                         AWS_ALLOW_HTTP=true)",
                    );
                }
                _ => return bad("S3Config::endpoint", "is not an http:// or https:// URL"),
            }
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return bad(
                "S3Config credentials",
                "the access key id and the secret must be set together",
            );
        }
        Ok(())
    }
}

const ALL_VARS: [&str; 11] = [
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT",
    "AWS_BUCKET",
    "AWS_BUCKET_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ALLOW_HTTP",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
];

fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// rustls is built without a default crypto provider (the default, aws-lc-rs, is a long C
/// build): install ring's for the process unless someone installed one already.
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: either provider serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// `endpoint` with everything up to its last '@' (user info: credentials) replaced, for
/// display.
fn redact_user_info(endpoint: &str) -> String {
    match (endpoint.split_once("://"), endpoint.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://<redacted>@{}", &endpoint[at + 1..]),
        (None, Some(at)) => format!("<redacted>@{}", &endpoint[at + 1..]),
        (_, None) => endpoint.to_owned(),
    }
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "<redacted>" } else { "<unset>" };
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint.as_deref().map(redact_user_info))
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &redacted(self.access_key_id.is_some()))
            .field(
                "secret_access_key",
                &redacted(self.secret_access_key.is_some()),
            )
            .field("session_token", &redacted(self.session_token.is_some()))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .field("client_max_retries", &self.client_max_retries)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const KEY_ID: &str = "AKIAEXAMPLEKEYID0001";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";

    fn vars(pairs: &[(&str, &str)]) -> impl FnMut(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn full_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:9000"),
            ("AWS_BUCKET_NAME", "pages"),
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", KEY_ID),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
            ("AWS_ALLOW_HTTP", "true"),
        ]
    }

    #[test]
    fn reads_the_environment() {
        let config = S3Config::from_vars(vars(&full_env())).unwrap();
        assert_eq!(config.endpoint(), Some("http://127.0.0.1:9000"));
        assert_eq!(config.bucket(), "pages");
        assert_eq!(config.region(), "eu-west-1");
        assert!(config.allow_http());
        assert!(config.has_credentials());

        let fallback = S3Config::from_vars(vars(&[
            ("AWS_ENDPOINT", "https://s3.example.com"),
            ("AWS_BUCKET", "b"),
            ("AWS_BUCKET_NAME", "ignored"),
        ]))
        .unwrap();
        assert_eq!(fallback.endpoint(), Some("https://s3.example.com"));
        assert_eq!(fallback.bucket(), "b");
        assert_eq!(fallback.region(), "us-east-1");
        assert!(!fallback.allow_http());
        assert!(!fallback.has_credentials());
    }

    #[test]
    fn environment_errors_name_the_variable_not_the_value() {
        let missing = S3Config::from_vars(vars(&[])).unwrap_err();
        assert!(missing.to_string().contains("AWS_BUCKET"), "{missing}");

        let half = S3Config::from_vars(vars(&[("AWS_BUCKET", "b"), ("AWS_ACCESS_KEY_ID", KEY_ID)]))
            .unwrap_err();
        assert!(half.to_string().contains("AWS_SECRET_ACCESS_KEY"), "{half}");
        assert!(!format!("{half} {half:?}").contains(KEY_ID));

        let other_half = S3Config::from_vars(vars(&[
            ("AWS_BUCKET", "b"),
            ("AWS_SECRET_ACCESS_KEY", SECRET),
        ]))
        .unwrap_err();
        assert!(!format!("{other_half} {other_half:?}").contains(SECRET));

        let bad_bool =
            S3Config::from_vars(vars(&[("AWS_BUCKET", "b"), ("AWS_ALLOW_HTTP", "maybe")]))
                .unwrap_err();
        assert!(
            bad_bool.to_string().contains("AWS_ALLOW_HTTP"),
            "{bad_bool}"
        );
    }

    #[test]
    fn user_info_is_redacted_from_endpoints() {
        assert_eq!(
            redact_user_info(&format!("https://{KEY_ID}:{SECRET}@host:9000/x")),
            "https://<redacted>@host:9000/x"
        );
        assert_eq!(redact_user_info("http://host:9000"), "http://host:9000");
        let config = S3Config::new("b").with_endpoint(format!("https://{KEY_ID}:{SECRET}@host"));
        let debug = format!("{config:?}");
        assert!(
            !debug.contains(SECRET) && !debug.contains(KEY_ID),
            "{debug}"
        );
    }

    #[test]
    fn debug_redacts_credentials() {
        let config = S3Config::from_vars(vars(&full_env()))
            .unwrap()
            .with_session_token("SESSIONTOKENVALUE");
        let debug = format!("{config:?}");
        assert!(!debug.contains(KEY_ID), "{debug}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(!debug.contains("SESSIONTOKENVALUE"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        assert!(debug.contains("pages"), "{debug}");
    }

    #[test]
    fn builds_http_and_https_stores_without_leaking() {
        let http = S3Config::from_vars(vars(&full_env())).unwrap();
        let store = http.build().unwrap();
        let shown = format!("{store}");
        assert!(shown.contains("pages"), "{shown}");
        assert!(!shown.contains(SECRET));

        // HTTPS needs a rustls crypto provider: building the client proves there is one.
        let https = S3Config::new("pages")
            .with_endpoint("https://s3.example.invalid")
            .with_credentials(KEY_ID, SECRET);
        https.build().unwrap();
        // AWS itself, with no endpoint.
        S3Config::new("pages")
            .with_credentials(KEY_ID, SECRET)
            .build()
            .unwrap();
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        let cases = [
            S3Config::new(""),
            S3Config::new("b").with_endpoint("127.0.0.1:9000"),
            S3Config::new("b").with_endpoint("http://127.0.0.1:9000"),
            S3Config::new("b").with_endpoint("ftp://host"),
            S3Config::new("b").with_endpoint("https://"),
            S3Config::new("b")
                .with_endpoint(format!("https://{KEY_ID}:{SECRET}@host"))
                .with_allow_http(true),
        ];
        for config in cases {
            let Err(error) = config.build() else {
                panic!("{config:?} was accepted");
            };
            assert!(matches!(error, Error::InvalidConfig { .. }), "{error:?}");
            let text = format!("{error} {error:?} {config:?}");
            assert!(!text.contains(SECRET), "{text}");
        }
    }
}
