//! Who may ask, and what every answer carries.
//!
//! Owns: the token check (every request, before any handler runs), the Host check that keeps
//! a token-less loopback server from answering pages of other sites (DNS rebinding), and the
//! headers of every response: a Content-Security-Policy that allows no script at all, no
//! framing, no sniffing, no caching, no referrer. Never: looks at the vault.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::web::Query;
use super::App;

/// The cookie a browser keeps the token in after opening the printed link.
pub const COOKIE: &str = "dsvault_token";

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// A new random token: 32 hex characters from the kernel's random source.
pub fn new_token() -> std::io::Result<String> {
    let mut buf = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal, in time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The token a request carries: `Authorization: Bearer T`, the cookie, or `?token=T`.
fn offered(headers: &HeaderMap, query: &Query) -> Vec<Vec<u8>> {
    let mut found = Vec::new();
    if let Some(t) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
    {
        found.push(t.to_vec());
    }
    for cookies in headers.get_all(header::COOKIE) {
        for c in cookies.as_bytes().split(|&b| b == b';') {
            let c = c.trim_ascii();
            if let Some(t) = c.strip_prefix(COOKIE.as_bytes()).and_then(|r| r.strip_prefix(b"=")) {
                found.push(t.to_vec());
            }
        }
    }
    if let Some(t) = query.bytes("token") {
        found.push(t.to_vec());
    }
    found
}

/// Is the Host header one this loopback server answers to?
fn loopback_host(headers: &HeaderMap, port: u16) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .any(|h| host == format!("{h}:{port}") || (port == 80 && host == *h))
}

/// Checks every request, then adds the security headers to whatever is answered.
pub async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let query = Query::parse(req.uri().query());
    let mut set_cookie = None;
    let refused = match &app.token {
        Some(token) => {
            let offers = offered(req.headers(), &query);
            if !offers.iter().any(|t| same(t, token.as_bytes())) {
                Some((
                    StatusCode::UNAUTHORIZED,
                    "a token is required: open the link `dsvault ui` printed",
                ))
            } else {
                if query.bytes("token").is_some() {
                    set_cookie = Some(format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"));
                }
                None
            }
        }
        None if !loopback_host(req.headers(), app.port) => Some((
            StatusCode::FORBIDDEN,
            "this server answers only to 127.0.0.1 and localhost",
        )),
        None => None,
    };
    let mut response = match refused {
        Some((status, text)) => (status, text).into_response(),
        None => next.run(req).await,
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(c) = set_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        h.insert(header::SET_COOKIE, c);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
        let t = new_token().unwrap();
        assert_eq!(t.len(), 32);
        assert_ne!(t, new_token().unwrap());
    }

    #[test]
    fn hosts() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(loopback_host(&h, 8080));
        assert!(!loopback_host(&h, 8081));
        h.insert(header::HOST, HeaderValue::from_static("evil.example:8080"));
        assert!(!loopback_host(&h, 8080));
    }
}
