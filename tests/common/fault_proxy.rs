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
                let msg = "<?xml version=\"1.0\"?><Error><Code>InternalError</Code><Message>injected by the test proxy</Message></Error>";
                write!(
                    to_client,
                    "HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{msg}",
                    msg.len()
                )?;
            }
            Fault::ShortenPackPuts(n) if is_pack_put && body.len() > n => {
                injected.fetch_add(1, Ordering::SeqCst);
                let short = &body[..body.len() - n];
                upstream.write_all(with_content_length(&head, short.len()).as_bytes())?;
                upstream.write_all(short)?;
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
