//! Store URLs: what `vault.toml`'s `store` names, and the `object_store` client for it.
//!
//! Owns: parsing `file://PATH`, `s3://BUCKET/PREFIX` (also `s3a://`), `gs://BUCKET/PREFIX`
//! and `az://CONTAINER/PREFIX` (also `azure://`), and building a client whose credentials
//! and endpoint come from the environment only (`AWS_*`, `GOOGLE_*`, `AZURE_*`), so that
//! nothing secret is ever written to `vault.toml` or shown in a message. Plain HTTP is allowed
//! only to a loopback endpoint (127.0.0.0/8, ::1, `localhost`: moto, Azurite, a GCS emulator)
//! unless the user asks for it (`DSVAULT_ALLOW_HTTP=1`, or object_store's own
//! `AWS_ALLOW_HTTP` / `GOOGLE_ALLOW_HTTP` / `AZURE_ALLOW_HTTP`); an `http://` endpoint elsewhere
//! is refused with a message naming it and the opt-in. Never does: any request.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::prefix::PrefixStore;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use crate::config::RemoteConfig;
use crate::error::{Error, Result};

/// A parsed store URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `file://PATH`; relative to the vault folder unless absolute.
    Local(PathBuf),
    S3 {
        bucket: String,
        prefix: String,
    },
    Gcs {
        bucket: String,
        prefix: String,
    },
    Azure {
        container: String,
        prefix: String,
    },
}

impl StoreUrl {
    /// Parse a store URL as written in `vault.toml` or given to `init --store`.
    pub fn parse(url: &str) -> Result<StoreUrl> {
        let bad = |why: &str| Error::Config(format!("store URL {url:?}: {why}"));
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(bad("file:// needs a path"));
            }
            return Ok(StoreUrl::Local(PathBuf::from(path)));
        }
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            bad("expected file://PATH, s3://BUCKET/PREFIX, gs://BUCKET/PREFIX or az://CONTAINER/PREFIX")
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(bad("the bucket (container) name is missing"));
        }
        if bucket.contains('@') || bucket.contains(':') {
            // Not echoed: what precedes the '@' may be a secret.
            return Err(Error::Config(
                "a store URL must not carry credentials or a host: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the GOOGLE_/AZURE_ equivalents), and AWS_ENDPOINT_URL for a non-AWS endpoint, in the environment".into(),
            ));
        }
        let (bucket, prefix) = (bucket.to_string(), prefix.trim_matches('/').to_string());
        match scheme {
            "s3" | "s3a" => Ok(StoreUrl::S3 { bucket, prefix }),
            "gs" => Ok(StoreUrl::Gcs { bucket, prefix }),
            "az" | "azure" => Ok(StoreUrl::Azure {
                container: bucket,
                prefix,
            }),
            other => Err(bad(&format!("unknown scheme {other}:// (expected file, s3, gs or az)"))),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, StoreUrl::Local(_))
    }

    /// The key prefix inside the bucket ("" for the whole bucket).
    fn prefix(&self) -> &str {
        match self {
            StoreUrl::Local(_) => "",
            StoreUrl::S3 { prefix, .. } | StoreUrl::Gcs { prefix, .. } | StoreUrl::Azure { prefix, .. } => prefix,
        }
    }

    /// An `object_store` client for this URL, configured from the environment.
    pub(crate) fn client(&self, settings: &RemoteConfig) -> Result<Arc<dyn ObjectStore>> {
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: settings.max_retries,
            retry_timeout: Duration::from_secs(settings.retry_timeout_secs),
        };
        let options = ClientOptions::new()
            .with_timeout(Duration::from_secs(settings.request_timeout_secs))
            .with_connect_timeout(Duration::from_secs(settings.request_timeout_secs.min(10)));
        let built: Result<Arc<dyn ObjectStore>, object_store::Error> = match self {
            StoreUrl::Local(_) => unreachable!("a file:// store is not an object_store client"),
            StoreUrl::S3 { bucket, .. } => {
                let b = AmazonS3Builder::from_env();
                let endpoint = b
                    .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
                    .or_else(|| b.get_config_value(&AmazonS3ConfigKey::Endpoint));
                let http = self.plain_http(endpoint.as_deref(), "S3 endpoint (AWS_ENDPOINT_URL)", "AWS")?;
                b.with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_client_options(options.with_allow_http(http))
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            StoreUrl::Gcs { bucket, .. } => {
                let b = GoogleCloudStorageBuilder::from_env();
                let base = gcs_base_url(&b);
                let what = "GCS base URL (gcs_base_url in the service account JSON, or GOOGLE_BASE_URL)";
                let http = self.plain_http(base.as_deref(), what, "GOOGLE")?;
                b.with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_client_options(options.with_allow_http(http))
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            StoreUrl::Azure { container, .. } => {
                let b = MicrosoftAzureBuilder::from_env();
                let (endpoint, what) = azure_endpoint(&b);
                // object_store itself allows plain HTTP to any emulator URL: checked here.
                let http = self.plain_http(endpoint.as_deref(), what, "AZURE")?;
                b.with_container_name(container)
                    .with_retry(retry)
                    .with_client_options(options.with_allow_http(http))
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
        };
        let client = built.map_err(|e| Error::Config(format!("store {self}: {e}")))?;
        Ok(match self.prefix() {
            "" => client,
            prefix => Arc::new(PrefixStore::new(client, prefix)),
        })
    }
}

impl StoreUrl {
    /// May this client speak plain HTTP to `endpoint` (the `what` of this backend, whose own
    /// opt-in variable is `{prefix}_ALLOW_HTTP`)? Only to loopback, unless asked for.
    fn plain_http(&self, endpoint: Option<&str>, what: &str, prefix: &str) -> Result<bool> {
        let own = format!("{prefix}_ALLOW_HTTP");
        let asked = [ALLOW_HTTP_VAR, own.as_str()]
            .iter()
            .any(|v| std::env::var(v).is_ok_and(|x| truthy(&x)));
        plain_http_allowed(endpoint, asked).map_err(|why| {
            Error::Config(format!(
                "store {self}: the {what} {why}. Use an https:// URL, or allow plain HTTP explicitly with {ALLOW_HTTP_VAR}=1 (or {own}=true)"
            ))
        })
    }
}

/// The variable that allows plain HTTP to a store endpoint that is not loopback.
pub const ALLOW_HTTP_VAR: &str = "DSVAULT_ALLOW_HTTP";

/// Whether a client may use plain HTTP for `endpoint` (`None`: the service's own https URL):
/// yes to loopback, yes elsewhere only when `asked`, and no for an https:// endpoint. The
/// `Err` says why a plain-HTTP endpoint is refused, naming it without any credentials.
fn plain_http_allowed(endpoint: Option<&str>, asked: bool) -> std::result::Result<bool, String> {
    let Some(endpoint) = endpoint else {
        return Ok(false);
    };
    if !endpoint.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://")) {
        return Ok(false);
    }
    let Ok(url) = url::Url::parse(endpoint) else {
        return Err("is not a valid http:// URL".into());
    };
    let shown = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("http://{h}:{p}"),
        (Some(h), None) => format!("http://{h}"),
        (None, _) => return Err("is an http:// URL without a host".into()),
    };
    if is_loopback(&url) || asked {
        return Ok(true);
    }
    Err(format!(
        "{shown} is plain HTTP to a host that is not loopback (127.0.0.0/8, ::1, localhost): data and credentials would cross the network unencrypted"
    ))
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
        None => false,
    }
}

/// object_store's reading of a boolean setting.
fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "on" | "yes" | "y")
}

/// The base URL a GCS client built from `b` will use: `GOOGLE_BASE_URL`, else the service
/// account JSON's `gcs_base_url` (how an emulator is reached), else Google's own (None).
fn gcs_base_url(b: &GoogleCloudStorageBuilder) -> Option<String> {
    if let Some(base) = b.get_config_value(&GoogleConfigKey::BaseUrl) {
        return Some(base);
    }
    let json = match b.get_config_value(&GoogleConfigKey::ServiceAccountKey) {
        Some(key) => key,
        // An unreadable file is left for the client to report.
        None => std::fs::read_to_string(b.get_config_value(&GoogleConfigKey::ServiceAccount)?).ok()?,
    };
    let account: serde_json::Value = serde_json::from_str(&json).ok()?;
    account.get("gcs_base_url")?.as_str().map(str::to_string)
}

/// The blob endpoint an Azure client built from `b` will use, and where it comes from.
fn azure_endpoint(b: &MicrosoftAzureBuilder) -> (Option<String>, &'static str) {
    let emulator = b
        .get_config_value(&AzureConfigKey::UseEmulator)
        .is_some_and(|v| truthy(&v));
    if emulator {
        let url = std::env::var("AZURITE_BLOB_STORAGE_URL").unwrap_or_else(|_| "http://127.0.0.1:10000".into());
        (Some(url), "Azurite URL (AZURITE_BLOB_STORAGE_URL)")
    } else {
        (
            b.get_config_value(&AzureConfigKey::Endpoint),
            "Azure endpoint (AZURE_STORAGE_ENDPOINT)",
        )
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, bucket, prefix) = match self {
            StoreUrl::Local(p) => return write!(f, "file://{}", p.display()),
            StoreUrl::S3 { bucket, prefix } => ("s3", bucket, prefix),
            StoreUrl::Gcs { bucket, prefix } => ("gs", bucket, prefix),
            StoreUrl::Azure { container, prefix } => ("az", container, prefix),
        };
        if prefix.is_empty() {
            write!(f, "{scheme}://{bucket}")
        } else {
            write!(f, "{scheme}://{bucket}/{prefix}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_and_refuses_credentials() {
        assert_eq!(
            StoreUrl::parse("file://store").unwrap(),
            StoreUrl::Local("store".into())
        );
        assert_eq!(
            StoreUrl::parse("s3://bkt/a/b/").unwrap(),
            StoreUrl::S3 {
                bucket: "bkt".into(),
                prefix: "a/b".into()
            }
        );
        assert_eq!(StoreUrl::parse("s3://bkt").unwrap().to_string(), "s3://bkt");
        assert_eq!(StoreUrl::parse("gs://g/p").unwrap().to_string(), "gs://g/p");
        assert_eq!(StoreUrl::parse("azure://c/p").unwrap().to_string(), "az://c/p");
        for bad in ["s3://key:secret@bkt/p", "ftp://x/y", "s3:///p", "nothing"] {
            assert!(StoreUrl::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn plain_http_only_to_loopback_unless_asked() {
        for ok in [
            "http://127.0.0.1:4443",
            "http://127.9.8.7",
            "http://localhost:9000/x",
            "http://LOCALHOST",
            "http://[::1]:10000",
            "http://user:pw@127.0.0.1:1/",
        ] {
            assert_eq!(plain_http_allowed(Some(ok), false), Ok(true), "{ok}");
        }
        for tls in [None, Some("https://storage.googleapis.com"), Some("https://10.0.0.5")] {
            assert_eq!(plain_http_allowed(tls, false), Ok(false), "{tls:?}");
        }
        for far in [
            "http://10.0.0.5:9000",
            "http://0.0.0.0:1",
            "http://minio.example",
            "http://[fe80::1]",
        ] {
            let why = plain_http_allowed(Some(far), false).unwrap_err();
            assert!(why.contains("not loopback"), "{far}: {why}");
            assert_eq!(plain_http_allowed(Some(far), true), Ok(true), "{far}");
        }
        let why = plain_http_allowed(Some("http://key:secret@minio.example:9000/p?sig=x"), false).unwrap_err();
        assert!(why.starts_with("http://minio.example:9000 "), "{why}");
        assert!(!why.contains("secret") && !why.contains("sig"), "{why}");
        assert!(plain_http_allowed(Some("http://"), true).is_err());
    }
}
