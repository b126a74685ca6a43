//! `dsvault ui` driven by a real browser: headless Debian `chromium` through `chromedriver`
//! (WebDriver, the `fantoccini` client), plus plain HTTP requests for what a browser would
//! not send (traversal attempts, missing tokens, other methods, a foreign Host).
//!
//! scripts/test.sh installs chromium and chromium-driver. Under `CI=true` a missing browser
//! fails the test. `DSVAULT_UI_SCREENSHOTS=DIR` saves a screenshot of each page there (how
//! docs/img/ui-*.png are made).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const HOSTILE: &str = "<img src=x onerror=alert(1)>";
/// A 2×2 PNG (red, green / blue, white).
const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00,
    0x02, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0xfd, 0xd4, 0x9a, 0x73, 0x00, 0x00, 0x00, 0x13, 0x49,
    0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xc0, 0xb0, 0x00, 0x88, 0x19, 0xfe, 0x03, 0x01, 0x00, 0x1c,
    0x97, 0x05, 0x9c, 0x4f, 0x80, 0x1a, 0xbb, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A child process killed (and reaped) when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start `dsvault ui` with `args`; returns it and the URL it printed.
fn start_ui(v: &TestVault, args: &[&str]) -> (Killed, String) {
    let mut child = v
        .cmd()
        .arg("ui")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("dsvault ui: serving ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    (Killed(child), url)
}

/// One plain HTTP/1.1 GET (or another method): status, headers and body.
fn http(port: u16, method: &str, target: &str, headers: &[&str]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head[9..12].parse().unwrap();
    (status, head, raw[end..].to_vec())
}

fn status(port: u16, target: &str) -> u16 {
    http(port, "GET", target, &[]).0
}

/// The vault the pages show: two versions of a gold set, and a chain of two derived sets.
fn fill(v: &TestVault, tmp: &Path) -> Vec<u8> {
    let one = tmp.join("one");
    let two = tmp.join("two");
    let big = text_rows(3, 6000);
    for root in [&one, &two] {
        write_file(root, "images/dot.png", PNG);
        write_file(root, HOSTILE, b"hostile name, harmless bytes\n");
        write_file(root, os(b"caf\xe9.txt"), b"caf\xc3\xa9 au lait\n");
        write_file(root, "big.txt", &big);
        write_file(root, "quote\"&'.txt", b"quotes\n");
    }
    write_file(&one, "readme.txt", b"hello from v1\n");
    write_file(&one, "data/a.csv", b"a,b\n1,2\n");
    write_file(&two, "readme.txt", b"hello from v2, <b>not bold</b>\n");
    write_file(&two, "data/b.csv", b"c,d\n3,4\n");
    chmod(&two.join("big.txt"), 0o600);
    v.ingest_ok(&one, "photos", "v1", &[]);
    v.ingest_ok(&two, "photos", "v2", &[]);
    v.run(["workspace", "new", "cleaning", "--base", "gold/photos@v2"]).ok();
    write_file(&v.dir.join("workspaces/cleaning/upper"), "data/clean.csv", b"c,d\n");
    v.run([
        "derive",
        "cleaning",
        "--name",
        "clean",
        "--version",
        "v1",
        "--command",
        "python3 clean.py --drop-empty",
    ])
    .ok();
    v.run(["workspace", "new", "small", "--base", "derived/clean@v1"]).ok();
    write_file(&v.dir.join("workspaces/small/upper"), "sample.txt", b"ten rows\n");
    v.run([
        "derive",
        "small",
        "--name",
        "small",
        "--version",
        "v1",
        "--command",
        "head -n 10 data/clean.csv",
    ])
    .ok();
    big
}

async fn shot(c: &Client, name: &str) {
    let Some(dir) = std::env::var_os("DSVAULT_UI_SCREENSHOTS") else {
        return;
    };
    let png = c.screenshot().await.unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(PathBuf::from(dir).join(format!("ui-{name}.png")), png).unwrap();
}

async fn texts(c: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css(css)).await.unwrap() {
        out.push(e.text().await.unwrap());
    }
    out
}

async fn attrs(c: &Client, css: &str, attr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in c.find_all(Locator::Css(css)).await.unwrap() {
        out.push(e.attr(attr).await.unwrap().unwrap_or_default());
    }
    out
}

async fn browser(driver_port: u16, profile: &Path) -> Client {
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--window-size=1280,900", format!("--user-data-dir={}", profile.display())]
        }
    });
    let Value::Object(caps) = caps else { unreachable!() };
    let url = format!("http://127.0.0.1:{driver_port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match ClientBuilder::rustls()
            .unwrap()
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for chromedriver: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver did not start a browser: {e}"),
        }
    }
}

#[test]
fn the_web_catalog_in_a_real_browser() {
    if !on_path("chromium") || !on_path("chromedriver") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium and chromedriver are needed (scripts/test.sh installs chromium and chromium-driver)"
        );
        eprintln!("SKIPPED: chromium or chromedriver missing; run scripts/test.sh to install them");
        return;
    }
    let tmp = tempdir();
    let v = TestVault::new();
    let big = fill(&v, tmp.path());
    let (_server, base) = start_ui(&v, &["--listen", "127.0.0.1:0", "--price-per-gib-month", "0.023"]);
    let port: u16 = base.trim_end_matches('/').rsplit(':').next().unwrap().parse().unwrap();
    let driver_port = free_port();
    let _driver = Killed(
        Command::new("chromedriver")
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = browser(driver_port, &tmp.path().join("profile")).await;
        let result = pages(&c, &v, &base, &big).await;
        let _ = c.close().await;
        result
    });
    plain_http(&v, port, &big);
    v.verify();
}

async fn pages(c: &Client, v: &TestVault, base: &str, big: &[u8]) {
    let url = |p: &str| format!("{}{}", base.trim_end_matches('/'), p);

    // The dataset list shows what `ls` shows.
    c.goto(&url("/")).await.unwrap();
    shot(c, "datasets").await;
    let ls = v.run(["--json", "ls"]).ok().json_lines();
    let listed: Vec<String> = attrs(c, "tr.dataset", "data-dataset").await;
    let expected: Vec<String> = ls.iter().map(|d| string(d, "dataset")).collect();
    assert_eq!(
        listed.iter().collect::<BTreeSet<_>>(),
        expected.iter().collect::<BTreeSet<_>>()
    );
    let roots = texts(c, "tr.dataset td.root").await;
    let files = texts(c, "tr.dataset td.files").await;
    for (i, name) in listed.iter().enumerate() {
        let d = ls.iter().find(|d| &string(d, "dataset") == name).unwrap();
        assert_eq!(roots[i], string(d, "root")[..16]);
        assert_eq!(files[i], num(d, "files").to_string());
    }
    // Filtering by name.
    c.goto(&url("/?q=clean")).await.unwrap();
    assert_eq!(attrs(c, "tr.dataset", "data-dataset").await, ["derived/clean@v1"]);

    // Click through to a file: its bytes are on the page.
    c.goto(&url("/")).await.unwrap();
    c.find(Locator::Css("tr[data-dataset='gold/photos@v2'] td.name a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    shot(c, "dataset").await;
    c.find(Locator::LinkText("readme.txt"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let preview = c.find(Locator::Css("#preview")).await.unwrap().text().await.unwrap();
    assert_eq!(preview, "hello from v2, <b>not bold</b>");
    assert!(
        c.find_all(Locator::Css("#preview b")).await.unwrap().is_empty(),
        "markup in a file was rendered"
    );
    // A large text file: the first 64 KiB only.
    c.goto(&url("/d/gold/photos/v2/file?p=big.txt")).await.unwrap();
    shot(c, "file").await;
    let shown_text = c.find(Locator::Css("#preview")).await.unwrap().text().await.unwrap();
    assert!(big.len() > 64 << 10);
    assert!(String::from_utf8_lossy(&big[..64 << 10]).starts_with(shown_text.trim_end()));
    assert!(texts(c, "p.note")
        .await
        .iter()
        .any(|n| n.contains("the first 64.0 KiB of")));
    // An image is previewed, and loads.
    c.goto(&url("/d/gold/photos/v2")).await.unwrap();
    c.find(Locator::LinkText("images/"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.find(Locator::LinkText("dot.png"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let width = c
        .execute(
            "return document.querySelector('figure.preview img').naturalWidth",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(width, json!(2));
    shot(c, "image").await;

    // A hostile name is text: no image element, no alert, the name readable as is.
    c.goto(&url("/d/gold/photos/v1")).await.unwrap();
    let names = texts(c, "#tree td.name").await;
    assert!(names.contains(&HOSTILE.to_string()), "{names:?}");
    assert!(names.contains(&"quote\"&'.txt".to_string()), "{names:?}");
    assert!(names.contains(&"caf\\xE9.txt".to_string()), "{names:?}");
    assert!(c.find_all(Locator::Css("main img")).await.unwrap().is_empty());
    assert!(c.get_alert_text().await.is_err(), "an alert is open");
    c.find(Locator::LinkText(HOSTILE)).await.unwrap().click().await.unwrap();
    assert_eq!(c.find(Locator::Css("h1")).await.unwrap().text().await.unwrap(), HOSTILE);
    assert!(c.find_all(Locator::Css("main img")).await.unwrap().is_empty());
    assert!(c.get_alert_text().await.is_err(), "an alert is open");
    // A name that is not UTF-8 is reachable through its link.
    c.goto(&url("/d/gold/photos/v1")).await.unwrap();
    c.find(Locator::LinkText("caf\\xE9.txt"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        c.find(Locator::Css("#preview")).await.unwrap().text().await.unwrap(),
        "café au lait"
    );

    // The lineage graph: one node per dataset of the chain, each a link; edges labelled.
    c.goto(&url("/lineage/derived/small/v1")).await.unwrap();
    shot(c, "lineage").await;
    let nodes: BTreeSet<String> = attrs(c, "g.node", "data-dataset").await.into_iter().collect();
    let chain: BTreeSet<String> = ["derived/small@v1", "derived/clean@v1", "gold/photos@v2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(nodes, chain);
    assert_eq!(c.find_all(Locator::Css("g.node a")).await.unwrap().len(), 3);
    let labels = texts(c, "g.edge text.edge-label").await;
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert!(
        labels.iter().any(|l| l.starts_with("python3 clean.py --drop-empty")),
        "{labels:?}"
    );
    assert!(
        labels.iter().any(|l| l.starts_with("head -n 10 data/clean.csv")),
        "{labels:?}"
    );
    assert!(labels.iter().all(|l| l.contains("exit")), "{labels:?}");
    c.find(Locator::Css("g.node[data-dataset='gold/photos@v2'] a"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/d/gold/photos/v2");

    // The diff page matches `dsvault diff --json`.
    c.goto(&url("/diff?a=gold%2Fphotos%40v1&b=gold%2Fphotos%40v2"))
        .await
        .unwrap();
    shot(c, "diff").await;
    let want = v
        .run(["--json", "diff", "gold/photos@v1", "gold/photos@v2"])
        .ok()
        .json();
    let kinds = attrs(c, "tr.change", "data-change").await;
    let paths = texts(c, "tr.change td.path").await;
    let want_rows: Vec<(String, String)> = want["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (string(c, "change"), string(c, "path")))
        .collect();
    assert_eq!(kinds.into_iter().zip(paths).collect::<Vec<_>>(), want_rows);
    for key in [
        "added",
        "removed",
        "modified",
        "mode",
        "target",
        "type",
        "unchanged",
        "new_bytes",
        "b_bytes_in_a",
    ] {
        let cell = c.find(Locator::Css(&format!("td[data-total='{key}']"))).await.unwrap();
        assert_eq!(cell.text().await.unwrap(), want["totals"][key].to_string(), "{key}");
    }

    // Storage: logical against stored, the ratio, the cost at the price given at start.
    c.goto(&url("/storage")).await.unwrap();
    shot(c, "storage").await;
    let stats = v.run(["--json", "stats", "--price-per-gib-month", "0.023"]).ok().json();
    let ratio = c.find(Locator::Css("#ratio")).await.unwrap().text().await.unwrap();
    assert_eq!(ratio, format!("{:.2}x", stats["dedup_ratio"].as_f64().unwrap()));
    let cost = c.find(Locator::Css("#cost")).await.unwrap().text().await.unwrap();
    assert!(cost.ends_with("at 0.023 per GiB-month"), "{cost}");
    assert_eq!(c.find_all(Locator::Css("#chart g.bar")).await.unwrap().len(), 4);
}

/// What a browser would not send: traversal, other methods, other hosts, missing tokens.
fn plain_http(v: &TestVault, port: u16, big: &[u8]) {
    // A download is the file's bytes, whole.
    let (code, head, body) = http(port, "GET", "/d/gold/photos/v2/download?p=big.txt", &[]);
    assert_eq!(code, 200, "{head}");
    assert_eq!(body, big);
    assert!(head.contains("attachment"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-security-policy: default-src 'none'"),
        "{head}"
    );

    for target in [
        "/d/gold/photos/v1/file?p=../../vault.toml",
        "/d/gold/photos/v1/file?p=..%2F..%2Fcatalog.db",
        "/d/gold/photos/v1/file?p=/etc/passwd",
        "/d/gold/photos/v1/file?p=%2Fetc%2Fpasswd",
        "/d/gold/photos/v1/file?p=data/../readme.txt",
        "/d/gold/photos/v1/file?p=data%2F..%2Freadme.txt",
        "/d/gold/photos/v1/download?p=../vault.toml",
        "/d/gold/photos/v1/download?p=data",
        "/d/gold/photos/v1/raw?p=readme.txt",
        "/d/gold/photos/v1?p=..",
        "/d/gold/photos/v1?p=%2E%2E%2F%2E%2E",
        "/d/gold/..%2F..%2Fetc/v1",
        "/d/gold/photos/..%2F..%2Fvault.toml/file?p=readme.txt",
        "/d/gold%2F..%2Fderived/photos/v1",
        "/static/..%2F..%2Fcatalog.db",
        "/static/../catalog.db",
        "/../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/lineage/gold/..%2F..%2F/v1",
        "/catalog.db",
        "/vault.toml",
    ] {
        assert_eq!(status(port, target), 404, "{target}");
    }
    // Nothing can be changed: only GET (and HEAD) exist.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (code, ..) = http(
            port,
            method,
            "/d/gold/photos/v1/file?p=readme.txt",
            &["Content-Length: 0"],
        );
        assert_eq!(code, 405, "{method}");
    }
    // A loopback server answers only to loopback names (no DNS rebinding).
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    // Any other address needs the token, on every request.
    let (_open, url) = start_ui(v, &["--listen", "0.0.0.0:0"]);
    let token = url
        .split("token=")
        .nth(1)
        .expect("a token in the printed URL")
        .to_string();
    assert_eq!(token.len(), 32);
    let port: u16 = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    for target in [
        "/",
        "/d/gold/photos/v1/download?p=readme.txt",
        "/static/style.css",
        "/nothing",
    ] {
        assert_eq!(status(port, target), 401, "{target}");
    }
    assert_eq!(status(port, "/?token=wrong"), 401);
    assert_eq!(http(port, "GET", "/", &["Authorization: Bearer nope"]).0, 401);
    let (code, head, _) = http(port, "GET", &format!("/?token={token}"), &[]);
    assert_eq!(code, 200);
    assert!(
        head.contains(&format!("dsvault_token={token}; HttpOnly; SameSite=Strict")),
        "{head}"
    );
    let cookie = format!("Cookie: dsvault_token={token}");
    let (code, _, body) = http(port, "GET", "/d/gold/photos/v1/download?p=readme.txt", &[&cookie]);
    assert_eq!((code, body.as_slice()), (200, &b"hello from v1\n"[..]));
    assert_eq!(
        http(port, "GET", "/storage", &[&format!("Authorization: Bearer {token}")]).0,
        200
    );
    // A given token works the same; a short one is refused at start.
    let (_given, url) = start_ui(v, &["--listen", "0.0.0.0:0", "--token", "a-given-token-of-some-length"]);
    assert!(url.ends_with("?token=a-given-token-of-some-length"), "{url}");
    v.run(["ui", "--listen", "0.0.0.0:0", "--token", "short"])
        .code_is(1)
        .mentions(&["--token"]);
}

#[test]
fn stats_and_estimate_give_monthly_costs_at_a_price() {
    let tmp = tempdir();
    let src = tmp.path().join("src");
    write_file(&src, "a.bin", &random_bytes(1, 3 * MIB as usize));
    let v = TestVault::new();
    let est = v
        .run([
            "--json",
            "estimate",
            src.to_str().unwrap(),
            "--price-per-gib-month",
            "2",
        ])
        .ok()
        .json();
    let new = num(&est, "new_bytes");
    assert_eq!(est["price_per_gib_month"], json!(2.0));
    assert_eq!(
        est["monthly_cost"].as_f64().unwrap(),
        new as f64 / (1u64 << 30) as f64 * 2.0
    );
    let text = v
        .run(["estimate", src.to_str().unwrap(), "--price-per-gib-month", "2"])
        .ok()
        .stdout_str();
    assert!(text.contains("monthly cost       0.0059  at 2 per GiB-month"), "{text}");

    v.ingest_ok(&src, "priced", "v1", &[]);
    let stats = v.run(["--json", "stats", "--price-per-gib-month", "0.5"]).ok().json();
    let stored = num(&stats, "stored_bytes");
    assert_eq!(
        stats["monthly_cost"].as_f64().unwrap(),
        stored as f64 / (1u64 << 30) as f64 * 0.5
    );
    let d = &stats["datasets"][0];
    assert_eq!(
        d["monthly_cost"].as_f64().unwrap(),
        num(d, "stored_bytes") as f64 / (1u64 << 30) as f64 * 0.5
    );
    let plain = v.run(["--json", "stats"]).ok().json();
    assert!(plain.get("monthly_cost").is_none());
    let text = v.run(["stats", "--price-per-gib-month", "0.5"]).ok().stdout_str();
    assert!(
        text.contains("monthly cost at 0.5 per GiB-month: 0.0015 for the vault's 3.0 MiB stored"),
        "{text}"
    );
    for bad in ["-1", "abc", "inf"] {
        v.run(["stats".to_string(), format!("--price-per-gib-month={bad}")])
            .code_is(2)
            .mentions(&["price"]);
    }
}
