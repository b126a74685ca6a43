//! A fault-injecting HTTP/1.1 proxy in front of the real moto server, for the tests of a store
//! that misbehaves while an ingest uploads: every request still goes to moto, except that
//! single-request uploads of pack objects are answered with an error or forwarded with their
//! body cut short, or conditional headers are dropped. Not a fake S3: moto serves everything
//! the proxy lets through unchanged.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// What the proxy does to `PUT …/packs/…` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer `500 InternalError` without forwarding.
    FailPackPuts,
    /// Forward with the last `n` bytes of the body dropped (and Content-Length to match), so
    /// the store keeps a short object and says it succeeded.
    ShortenPackPuts(usize),
    /// Forward every request with its `If-None-Match` header removed: a server that ignores
    /// create-only PUTs and silently overwrites.
    IgnoreCreateOnly,
    /// Answer listings (`GET ...?list-type=2`) with every entry whose key contains the
    /// string left out: a listing that silently omits keys.
    OmitFromListings(&'static str),
    /// Answer listings `500 InternalError`: a listing that fails.
    FailListings,
}

/// A running proxy; stops accepting when dropped.
pub struct FaultProxy {
    pub port: u16,
    injected: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16, fault: Fault) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let injected = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopping) = (injected.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let count = count.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, upstream_port, fault, &count);
                });
            }
        });
        FaultProxy { port, injected, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many requests the proxy has tampered with.
    pub fn injected(&self) -> usize {
        self.injected.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port)); // wakes the accept loop
    }
}

/// One client connection: requests are parsed (head + Content-Length body) and forwarded one
/// at a time; responses are piped back untouched by a second thread.
fn serve(client: TcpStream, upstream_port: u16, fault: Fault, injected: &AtomicUsize) -> std::io::Result<()> {
    let mut upstream = TcpStream::connect(("127.0.0.1", upstream_port))?;
    let mut to_client = client.try_clone()?;
    let (mut from_upstream, mut client_out) = (upstream.try_clone()?, client.try_clone()?);
    let pipe = std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_upstream, &mut client_out);
        let _ = client_out.shutdown(Shutdown::Write);
    });
    let mut reader = BufReader::new(client);
    while let Some((head, body)) = read_request(&mut reader)? {
        let request_line = head.lines().next().unwrap_or_default().to_string();
        let is_pack_put = request_line.starts_with("PUT ") && request_line.contains("/packs/");
        match fault {
            Fault::FailPackPuts if is_pack_put => {
                injected.fetch_add(1, Ordering::SeqCst);
                answer_500(&mut to_client)?;
            }
            Fault::ShortenPackPuts(n) if is_pack_put && body.len() > n => {
                injected.fetch_add(1, Ordering::SeqCst);
                let short = &body[..body.len() - n];
                upstream.write_all(with_content_length(&head, short.len()).as_bytes())?;
                upstream.write_all(short)?;
            }
            Fault::FailListings if is_listing(&request_line) => {
                injected.fetch_add(1, Ordering::SeqCst);
                answer_500(&mut to_client)?;
            }
            Fault::OmitFromListings(needle) if is_listing(&request_line) => {
                let (resp_head, body) = forward_alone(upstream_port, &head, &body)?;
                let text = String::from_utf8_lossy(&body).into_owned();
                let kept = omit_entries(&text, needle);
                if kept.len() != text.len() {
                    injected.fetch_add(1, Ordering::SeqCst);
                }
                to_client.write_all(with_content_length(&resp_head, kept.len()).as_bytes())?;
                to_client.write_all(kept.as_bytes())?;
            }
            Fault::IgnoreCreateOnly if header(&head, "if-none-match").is_some() => {
                injected.fetch_add(1, Ordering::SeqCst);
                let stripped: String = head
                    .split_inclusive("\r\n")
                    .filter(|l| !l.to_ascii_lowercase().starts_with("if-none-match:"))
                    .collect();
                upstream.write_all(stripped.as_bytes())?;
                upstream.write_all(&body)?;
            }
            _ => {
                upstream.write_all(head.as_bytes())?;
                upstream.write_all(&body)?;
            }
        }
    }
    let _ = upstream.shutdown(Shutdown::Write);
    let _ = pipe.join();
    Ok(())
}

/// Answer `500 InternalError` without forwarding.
fn answer_500(to_client: &mut TcpStream) -> std::io::Result<()> {
    let msg =
        "<?xml version=\"1.0\"?><Error><Code>InternalError</Code><Message>injected by the test proxy</Message></Error>";
    write!(
        to_client,
        "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{msg}",
        msg.len()
    )
}

fn is_listing(request_line: &str) -> bool {
    request_line.starts_with("GET ") && request_line.contains("list-type=2")
}

/// Send one request on a connection of its own and read the whole response (head, body).
fn forward_alone(upstream_port: u16, head: &str, body: &[u8]) -> std::io::Result<(String, Vec<u8>)> {
    let mut up = TcpStream::connect(("127.0.0.1", upstream_port))?;
    up.write_all(head.as_bytes())?;
    up.write_all(body)?;
    let mut reader = BufReader::new(up);
    let mut resp_head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        resp_head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let len = header(&resp_head, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut resp_body = vec![0; len];
    reader.read_exact(&mut resp_body)?;
    Ok((resp_head, resp_body))
}

/// An S3 listing without the `<Contents>` entries whose key contains `needle`.
fn omit_entries(xml: &str, needle: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(start) = rest.find("<Contents>") {
        let end = rest[start..]
            .find("</Contents>")
            .map_or(rest.len(), |e| start + e + "</Contents>".len());
        out.push_str(&rest[..start]);
        let entry = &rest[start..end];
        let key = entry
            .split("<Key>")
            .nth(1)
            .and_then(|k| k.split("</Key>").next())
            .unwrap_or_default();
        if !key.contains(needle) {
            out.push_str(entry);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The next request's head (through the blank line) and body, or `None` at end of stream.
fn read_request(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding: chunked"),
        "the test proxy only handles Content-Length bodies"
    );
    let len = header(&head, "content-length").map_or(0, |v| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body)?;
    Ok(Some((head, body)))
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

fn with_content_length(head: &str, len: usize) -> String {
    head.split_inclusive("\r\n")
        .map(|l| match l.split_once(':') {
            Some((k, _)) if k.trim().eq_ignore_ascii_case("content-length") => format!("{k}: {len}\r\n"),
            _ => l.to_string(),
        })
        .collect()
}
