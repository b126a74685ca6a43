//! One file's bytes over HTTP: the image behind a preview, and a download. Both read through
//! the library's verified path (`ops::read`), the same chunks `cat` reads and re-hashes.
//!
//! Owns: what a preview may read (the first 64 KiB; an image whole only up to 16 MiB),
//! recognising images by their first bytes (never by name, never SVG: it can hold script),
//! and streaming a download without holding it in memory. Never: serves a folder, a symlink
//! or a path `ops::read` refused.

use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use dsvault::catalog::{DatasetRow, Entry, EntryKind};
use dsvault::ops::read;

use super::web::{blocking, dataset_name, Query, UiError};
use super::App;

/// Bytes of a file a preview shows at most.
pub const PREVIEW: usize = 64 << 10;
/// Images larger than this get no inline preview (it would read them whole).
pub const IMAGE_LIMIT: u64 = 16 << 20;

/// The image type of a file from its first bytes, if it is one browsers show.
pub fn image_type(head: &[u8]) -> Option<&'static str> {
    const KINDS: [(&[u8], &str); 5] = [
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"\xff\xd8\xff", "image/jpeg"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"BM", "image/bmp"),
    ];
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    KINDS.iter().find(|(magic, _)| head.starts_with(magic)).map(|(_, t)| *t)
}

/// A dataset and the regular file at `?p=` in it, or 404.
pub fn lookup(app: &App, kind: &str, name: &str, version: &str, query: &Query) -> Result<(DatasetRow, Entry), UiError> {
    let dataset = dataset_name(kind, name, version)?;
    let catalog = app.vault.catalog()?;
    let d = super::web::sealed(&catalog, &dataset)?;
    let path = query
        .bytes("p")
        .ok_or_else(|| UiError::NotFound("no file given (?p=PATH)".into()))?;
    let entry = read::entry(&catalog, &d, path)?;
    if entry.kind != EntryKind::File {
        return Err(UiError::NotFound(format!(
            "{}:{} is not a file",
            d.name,
            super::web::shown(path)
        )));
    }
    Ok((d, entry))
}

/// `GET /d/K/N/V/raw?p=PATH`: an image file's bytes, for the preview's `<img>`.
pub async fn raw(
    State(app): State<Arc<App>>,
    segments: Result<Path<(String, String, String)>, axum::extract::rejection::PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, UiError> {
    let Path((kind, name, version)) = segments.map_err(|e| UiError::NotFound(e.to_string()))?;
    let (kind_of, bytes) = blocking(move || {
        let query = Query::parse(q.as_deref());
        let (d, entry) = lookup(&app, &kind, &name, &version, &query)?;
        let catalog = app.vault.catalog()?;
        let head = read::prefix(app.vault.store(), &catalog, &d, &entry, 16)?;
        let kind_of = image_type(&head).filter(|_| entry.size <= IMAGE_LIMIT);
        let Some(kind_of) = kind_of else {
            return Err(UiError::NotFound("not an image this page previews".into()));
        };
        let mut bytes = Vec::with_capacity(entry.size as usize);
        read::whole(app.vault.store(), &catalog, &d, &entry, &mut bytes)?;
        Ok((kind_of, bytes))
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, kind_of)], bytes).into_response())
}

/// Sends what `write_content` writes to the response body in pieces of 256 KiB.
struct ToBody {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ToBody {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let piece = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(256 << 10)));
        self.tx
            .blocking_send(Ok(piece))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ToBody {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 256 << 10 {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// `GET /d/K/N/V/download?p=PATH`: the whole file as an attachment, streamed. A chunk that
/// fails its hash ends the body early (the length was announced, so the client sees a
/// short, failed download, never wrong bytes).
pub async fn download(
    State(app): State<Arc<App>>,
    segments: Result<Path<(String, String, String)>, axum::extract::rejection::PathRejection>,
    RawQuery(q): RawQuery,
) -> Result<Response, UiError> {
    let Path((kind, name, version)) = segments.map_err(|e| UiError::NotFound(e.to_string()))?;
    let query = Query::parse(q.as_deref());
    let app2 = app.clone();
    let (d, entry) = blocking(move || lookup(&app2, &kind, &name, &version, &query)).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let size = entry.size;
    let filename = attachment_name(&entry.name);
    tokio::task::spawn_blocking(move || {
        let mut out = ToBody {
            tx: tx.clone(),
            buf: Vec::with_capacity(256 << 10),
        };
        let result = app
            .vault
            .catalog()
            .and_then(|c| read::whole(app.vault.store(), &c, &d, &entry, &mut out))
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|_| out.flush());
        if let Err(e) = result {
            tracing::warn!(
                "download of {}:{} failed: {e}",
                d.name,
                String::from_utf8_lossy(&entry.path())
            );
            let _ = tx.blocking_send(Err(e));
        }
    });
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut response = Body::from_stream(stream).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&filename) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    *response.status_mut() = StatusCode::OK;
    Ok(response)
}

/// `attachment; filename="..."; filename*=UTF-8''...`: the name as ASCII (others `_`) and
/// exactly, percent-encoded.
fn attachment_name(name: &[u8]) -> String {
    let ascii: String = name
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b"._-+".contains(&b) {
                b as char
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{}",
        super::web::enc(name)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_known_by_their_first_bytes() {
        assert_eq!(image_type(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(image_type(b"\xff\xd8\xff\xe0"), Some("image/jpeg"));
        assert_eq!(image_type(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(image_type(b"<svg onload=alert(1)>"), None);
        assert_eq!(image_type(b"hello"), None);
    }

    #[test]
    fn attachment_names_are_header_safe() {
        let v = attachment_name(b"a\"b\r\n;c\xe9.txt");
        assert!(
            v.starts_with("attachment; filename=\"a_b___c_.txt\"; filename*=UTF-8''a%22b%0D%0A%3Bc%E9.txt"),
            "{v}"
        );
    }
}
