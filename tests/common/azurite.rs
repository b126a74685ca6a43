//! A real Azure Blob server for the store tests: Azurite's blob service (npm package
//! `azurite`, installed by scripts/test.sh under `.cache/azurite`), on 127.0.0.1 and a free
//! port, storing in a temporary folder. The guard kills it when dropped. Without the package
//! the tests fail (never skip) and say how to install it.

#![allow(dead_code)]

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account and key (public, in Azure's documentation).
pub const ACCOUNT: &str = "devstoreaccount1";
pub const KEY: &str = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn install_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.cache/azurite")
}

/// A running Azurite blob server; killed on drop.
pub struct Azurite {
    child: std::sync::Mutex<Option<Child>>,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Azurite {
    /// Start a server and create `container` in it.
    pub fn start(container: &str) -> Azurite {
        let server = install_dir().join("node_modules/.bin/azurite-blob");
        assert!(
            server.exists(),
            "azurite-blob is missing ({}): the Azure store tests need it. Run scripts/test.sh, or: \
             npm install --prefix .cache/azurite azurite@3",
            server.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("azurite.log");
        let port = free_port();
        let child = Command::new(&server)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .arg("--location")
            .arg(dir.path().join("data"))
            .args(["--skipApiVersionCheck", "--silent"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting azurite-blob");
        let azurite = Azurite {
            child: std::sync::Mutex::new(Some(child)),
            port,
            log,
            _dir: dir,
        };
        azurite.wait_ready();
        azurite.create_container(container);
        azurite
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.lock().unwrap().as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "azurite-blob exited with {status}: {}",
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(start.elapsed() < Duration::from_secs(30), "azurite-blob did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Create a container with a SharedKey-signed request (node's own crypto and http; the
    /// store under test has no API for it).
    pub fn create_container(&self, container: &str) {
        let script = r#"
const crypto = require('crypto'); const http = require('http');
const [port, container, account, keyB64] = process.argv.slice(1);
const date = new Date().toUTCString(); const version = '2021-08-06';
const path = `/${account}/${container}`;
const toSign = ['PUT', '', '', '', '', '', '', '', '', '', '', '',
  `x-ms-date:${date}\nx-ms-version:${version}`, `/${account}${path}\nrestype:container`].join('\n');
const sig = crypto.createHmac('sha256', Buffer.from(keyB64, 'base64')).update(toSign, 'utf8').digest('base64');
const req = http.request({host: '127.0.0.1', port, method: 'PUT', path: `${path}?restype=container`,
  headers: {'x-ms-date': date, 'x-ms-version': version, 'Authorization': `SharedKey ${account}:${sig}`, 'Content-Length': 0}}, res => {
  let body = ''; res.on('data', d => body += d);
  res.on('end', () => { if (res.statusCode !== 201 && res.statusCode !== 409) { console.error(res.statusCode, body); process.exit(1); } });
});
req.on('error', e => { console.error(e.message); process.exit(1); }); req.end();
"#;
        let out = Command::new("node")
            .args(["-e", script, &self.port.to_string(), container, ACCOUNT, KEY])
            .output()
            .expect("running node to create the Azurite container");
        assert!(
            out.status.success(),
            "creating container {container} in Azurite failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment a `dsvault` command needs to reach this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AZURE_STORAGE_USE_EMULATOR", "true".into()),
            ("AZURITE_BLOB_STORAGE_URL", self.endpoint()),
        ]
    }

    /// Add [`Azurite::env`] to a command.
    pub fn apply(&self, cmd: &mut Command) {
        for (k, v) in self.env() {
            cmd.env(k, v);
        }
    }

    /// Stop the server now (a store that has gone away).
    pub fn kill(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}
