//! Store URLs: what `vault.toml`'s `store` names, and the `object_store` client for it.
//!
//! Owns: parsing `file://PATH`, `s3://BUCKET/PREFIX` (also `s3a://`), `gs://BUCKET/PREFIX`
//! and `az://CONTAINER/PREFIX` (also `azure://`), and building a client whose credentials
//! and endpoint come from the environment only (`AWS_*`, `GOOGLE_*`, `AZURE_*`), so that
//! nothing secret is ever written to `vault.toml` or shown in a message. An `http://`
//! endpoint (a loopback MinIO or moto) turns on plain HTTP for that client.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
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
                let http = endpoint_is_http(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT"]);
                AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry)
                    .with_client_options(options.with_allow_http(http))
                    .build()
                    .map(|s| Arc::new(s) as Arc<dyn ObjectStore>)
            }
            StoreUrl::Gcs { bucket, .. } => GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .with_client_options(options)
                .build()
                .map(|s| Arc::new(s) as Arc<dyn ObjectStore>),
            StoreUrl::Azure { container, .. } => {
                let http = endpoint_is_http(&["AZURE_STORAGE_ENDPOINT", "AZURE_ENDPOINT"]);
                MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
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

/// Is the first of these variables that is set an `http://` URL?
fn endpoint_is_http(vars: &[&str]) -> bool {
    vars.iter()
        .find_map(|v| std::env::var(v).ok())
        .is_some_and(|e| e.starts_with("http://"))
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
}
