//! A real S3-compatible server for the remote-store tests: moto's `moto_server`, from the
//! `.venv-moto` venv that scripts/test.sh creates, on 127.0.0.1 and a free port. The guard
//! kills it when dropped, so no test leaves a server behind. Without the venv the tests fail
//! (never skip) and say how to create it.

#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Credentials the tests use; moto accepts any.
pub const ACCESS_KEY: &str = "dsvault-test-access";
pub const SECRET_KEY: &str = "dsvault-test-secret-Z9q";

fn venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv-moto")
}

/// A running moto server; killed on drop.
pub struct Moto {
    child: std::sync::Mutex<Option<Child>>,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Moto {
    /// Start a server and create `bucket` in it.
    pub fn start(bucket: &str) -> Moto {
        let server = venv().join("bin/moto_server");
        assert!(
            server.exists(),
            "moto_server is missing ({}): the remote-store tests need it. Run scripts/test.sh, or: \
             python3 -m venv .venv-moto && .venv-moto/bin/pip install 'moto[server]'",
            server.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let port = free_port();
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting moto_server");
        let moto = Moto {
            child: std::sync::Mutex::new(Some(child)),
            port,
            log,
            _dir: dir,
        };
        moto.wait_ready();
        moto.python(&format!("s3.create_bucket(Bucket={bucket:?})"));
        moto
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.lock().unwrap().as_mut().unwrap().try_wait().unwrap() {
                panic!("moto_server exited with {status}: {}", self.log_text());
            }
            assert!(start.elapsed() < Duration::from_secs(30), "moto_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a `dsvault` command needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    /// Add [`Moto::env`] to a command.
    pub fn apply(&self, cmd: &mut Command) {
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
    }

    /// Run Python with boto3 (`s3` is a client for this server); returns its stdout.
    pub fn python(&self, code: &str) -> String {
        let script = format!(
            "import boto3\ns3 = boto3.client('s3', endpoint_url={:?}, region_name='us-east-1', aws_access_key_id={ACCESS_KEY:?}, aws_secret_access_key={SECRET_KEY:?})\n{code}\n",
            self.endpoint()
        );
        let out = Command::new(venv().join("bin/python"))
            .arg("-c")
            .arg(script)
            .output()
            .expect("running the venv's python");
        assert!(
            out.status.success(),
            "python failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Keys under `prefix` in `bucket` with their sizes.
    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<(String, u64)> {
        let out = self.python(&format!(
            "p = s3.get_paginator('list_objects_v2')\nfor page in p.paginate(Bucket={bucket:?}, Prefix={prefix:?}):\n    for o in page.get('Contents', []):\n        print(o['Key'], o['Size'])"
        ));
        out.lines()
            .map(|l| {
                let (k, s) = l.rsplit_once(' ').unwrap();
                (k.to_string(), s.parse().unwrap())
            })
            .collect()
    }

    /// Replace an object's bytes with the first `keep` of them, and flip one byte if `flip`.
    pub fn damage(&self, bucket: &str, key: &str, keep: Option<u64>, flip: bool) {
        let keep = keep.map_or("len(b)".to_string(), |k| k.to_string());
        self.python(&format!(
            "b = bytearray(s3.get_object(Bucket={bucket:?}, Key={key:?})['Body'].read())\nb = b[:{keep}]\nif {flip}: b[len(b) // 2] ^= 1\ns3.put_object(Bucket={bucket:?}, Key={key:?}, Body=bytes(b))",
            flip = if flip { "True" } else { "False" }
        ));
    }

    /// Request lines the server logged so far ("PUT /bucket/key?... HTTP/1.1").
    pub fn requests(&self) -> Vec<String> {
        strip_ansi(&self.log_text())
            .lines()
            .filter_map(|l| {
                let start = l.find('"')? + 1;
                let end = start + l[start..].find('"')?;
                Some(l[start..end].to_string())
            })
            .collect()
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stop the server now (a store that has gone away).
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The log colours failed requests; drop the escape sequences.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
