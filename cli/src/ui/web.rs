//! What every page of the web catalog shares: the layout, errors as pages, query strings
//! decoded to raw bytes, links, and names shown as text.
//!
//! Every value reaches HTML through maud, which escapes it; nothing here builds HTML by
//! string concatenation. Paths in links are percent-encoded bytes, so names that are not
//! UTF-8 survive a round trip through the browser.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};
use percent_encoding::{percent_decode, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use dsvault::{DatasetName, Kind};

/// Bytes left as they are in a link's query value: unreserved characters and `/`.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// A page that could not be served.
#[derive(Debug)]
pub enum UiError {
    NotFound(String),
    Internal(String),
}

impl From<dsvault::Error> for UiError {
    fn from(e: dsvault::Error) -> Self {
        match e {
            dsvault::Error::DatasetNotFound(_)
            | dsvault::Error::AmbiguousDataset { .. }
            | dsvault::Error::PathNotFound { .. }
            | dsvault::Error::NotAFile { .. }
            | dsvault::Error::InvalidName { .. } => UiError::NotFound(e.to_string()),
            other => UiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (status, text) = match self {
            UiError::NotFound(t) => (StatusCode::NOT_FOUND, t),
            UiError::Internal(t) => (StatusCode::INTERNAL_SERVER_ERROR, t),
        };
        let body = page(
            status.canonical_reason().unwrap_or("error"),
            html! { p.error { (text) } },
        );
        (status, body).into_response()
    }
}

pub type Page = Result<Html<String>, UiError>;

/// The frame of every page.
pub fn page(title: &str, body: Markup) -> Html<String> {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · dsvault" }
                link rel="stylesheet" href="/static/style.css";
            }
            body {
                nav {
                    a.brand href="/" { "dsvault" }
                    a href="/" { "datasets" }
                    a href="/diff" { "diff" }
                    a href="/storage" { "storage" }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    Html(doc.into_string())
}

/// A query string's pairs, values as raw bytes (`+` is a space, `%xx` any byte).
pub struct Query(Vec<(String, Vec<u8>)>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let pairs = raw
            .unwrap_or_default()
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (
                    decode(k).map_or_else(String::new, |b| String::from_utf8_lossy(&b).into_owned()),
                    decode(v).unwrap_or_default(),
                )
            })
            .collect();
        Query(pairs)
    }

    /// The first value of `key`, as bytes.
    pub fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_slice())
    }

    /// The first value of `key` as text, if it is UTF-8.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.bytes(key).and_then(|b| std::str::from_utf8(b).ok())
    }
}

fn decode(s: &str) -> Option<Vec<u8>> {
    let plus = s.replace('+', " ");
    Some(percent_decode(plus.as_bytes()).collect())
}

/// Percent-encode bytes for a query value.
pub fn enc(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, QUERY_VALUE).to_string()
}

/// Percent-encode text for a query value.
pub fn enc_str(s: &str) -> String {
    utf8_percent_encode(s, QUERY_VALUE).to_string()
}

/// The dataset named by the three path segments of a URL, or 404.
pub fn dataset_name(kind: &str, name: &str, version: &str) -> Result<DatasetName, UiError> {
    let kind: Kind = kind
        .parse()
        .map_err(|e: dsvault::Error| UiError::NotFound(e.to_string()))?;
    DatasetName::new(kind, name, version).map_err(UiError::from)
}

/// The sealed dataset of that name, or 404.
pub fn sealed(catalog: &dsvault::catalog::Catalog, d: &DatasetName) -> Result<dsvault::catalog::DatasetRow, UiError> {
    catalog
        .sealed_dataset(d)?
        .ok_or_else(|| UiError::NotFound(format!("no dataset {d} in this vault")))
}

/// `/d/KIND/NAME/VERSION`: a dataset's page (names are from the safe alphabet).
pub fn dataset_url(d: &DatasetName) -> String {
    format!("/d/{}/{}/{}", d.kind.as_str(), d.name, d.version)
}

/// A file's page in a dataset.
pub fn file_url(d: &DatasetName, path: &[u8]) -> String {
    format!("{}/file?p={}", dataset_url(d), enc(path))
}

/// A folder's listing in a dataset.
pub fn folder_url(d: &DatasetName, path: &[u8]) -> String {
    if path.is_empty() {
        dataset_url(d)
    } else {
        format!("{}?p={}", dataset_url(d), enc(path))
    }
}

/// Bytes as text: UTF-8 as is, other bytes as `\xNN` (maud escapes the result).
pub fn shown(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02X}"));
        }
    }
    out
}

/// Run catalog and store work off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, UiError> + Send + 'static,
) -> Result<T, UiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| UiError::Internal(format!("page worker failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_to_bytes_and_links_round_trip() {
        let q = Query::parse(Some("p=caf%E9%2Fx+y&a=gold%2Fm%40v1&empty"));
        assert_eq!(q.bytes("p"), Some(&b"caf\xe9/x y"[..]));
        assert_eq!(q.text("a"), Some("gold/m@v1"));
        assert_eq!(q.text("p"), None);
        assert_eq!(q.bytes("empty"), Some(&b""[..]));
        let path = b"a b/<img>/caf\xe9&x=1";
        let link = enc(path);
        assert!(!link.contains(['<', '>', '&', ' ']), "{link}");
        assert_eq!(Query::parse(Some(&format!("p={link}"))).bytes("p"), Some(&path[..]));
        assert_eq!(shown(b"caf\xe9"), "caf\\xE9");
    }
}
