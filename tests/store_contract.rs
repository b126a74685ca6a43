//! The store contract (src/store/backend.rs), one suite run against every backend: the local
//! folder, moto (S3) and Azurite (Azure Blob), each a real server on loopback started by the
//! test. In the spirit of object_store's own `integration.rs`: the same calls, the same
//! answers, whatever serves them. Then the contract seen from the command line: `init` proves
//! create-only writes and refuses a server that silently overwrites; an Azure vault round-trips.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use common::azurite::Azurite;
use common::fault_proxy::{Fault, FaultProxy};
use common::s3::Moto;
use common::*;
use dsvault::config::RemoteConfig;
use dsvault::pack::{encode_chunk, CompressPolicy, PackWriter};
use dsvault::store::{prove_create_only, PutKind, RefOutcome, Store, StoreUrl};
use dsvault::{ChunkId, RootHash};

/// Object-store clients read their endpoint and credentials from the environment when they
/// are built: one test at a time sets it and builds.
static ENV: Mutex<()> = Mutex::new(());

fn open_with_env(url: &str, env: &[(&'static str, String)], vault_dir: &Path) -> Store {
    let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
    for (k, v) in env {
        std::env::set_var(k, v);
    }
    let settings = RemoteConfig {
        verify_read_back_percent: 100,
        ..RemoteConfig::default()
    };
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

/// Every promise of the contract, in the order a vault relies on them.
fn check_contract(store: &Store, tmp: &Path) {
    let b = store.backend();

    // Packs: published whole, listed with their size, read by range and by index.
    let (sealed, chunks) = sealed_pack(tmp, 7);
    let (id, size, entries) = (sealed.id, sealed.size, sealed.entries.clone());
    store.put_pack(&sealed).unwrap();
    assert!(!sealed.tmp_path.exists(), "a put consumes the temporary pack file");
    assert_eq!(store.pack_size(id).unwrap(), Some(size));
    assert!(store.list_packs().unwrap().contains(&(id, size)));
    assert_eq!(store.read_pack_index(id).unwrap(), entries);
    assert_eq!(store.read_pack_indexes(&[(id, size)]).pop().unwrap().unwrap(), entries);
    for (e, raw) in entries.iter().zip(&chunks) {
        assert_eq!(&store.read_chunk(id, e).unwrap(), raw);
    }
    store.advise_chunks(&[(id, entries[0].offset, entries[0].stored_len as u64)]);
    assert_eq!(store.read_pack_range(id, 0, 8).unwrap(), b"DSVPACK\0");
    assert_eq!(store.read_pack(id).unwrap().len() as u64, size);
    let beyond = store.read_pack_range(id, size - 4, 8);
    assert!(beyond.is_err(), "a read past the end is an error, not short bytes");
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
    let mut refs: Vec<String> = store
        .list_refs()
        .unwrap()
        .iter()
        .map(|r| r.dataset.to_string())
        .collect();
    refs.sort();
    assert_eq!(refs, ["derived/b@2", "gold/a@1"]);
    store.remove_ref("derived", "b", "2").unwrap();
    store.remove_ref("derived", "b", "2").unwrap(); // a missing ref is not an error
    assert_eq!(store.list_refs().unwrap().len(), 1);

    // Generic objects: create-only refused the second time, overwrite replaces, listings
    // carry size and the store's time, deletes are idempotent.
    assert!(b.put_object("leases/x/one", b"1", PutKind::Create).unwrap());
    assert!(!b.put_object("leases/x/one", b"other", PutKind::Create).unwrap());
    assert_eq!(b.get_object("leases/x/one").unwrap().unwrap(), b"1");
    assert!(b.put_object("leases/x/two", b"22", PutKind::Overwrite).unwrap());
    assert!(b.put_object("leases/x/two", b"333", PutKind::Overwrite).unwrap());
    assert_eq!(b.get_object("leases/x/two").unwrap().unwrap(), b"333");
    let now = store.server_time().unwrap();
    let mut listed = b.list_objects("leases/x").unwrap();
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let keys: Vec<(&str, u64)> = listed.iter().map(|o| (o.key.as_str(), o.size)).collect();
    assert_eq!(keys, [("leases/x/one", 1), ("leases/x/two", 3)]);
    for o in &listed {
        assert!(
            (now - o.modified).abs() <= 5,
            "store time {now} vs object time {}",
            o.modified
        );
    }
    let head = b.head_object("leases/x/two").unwrap().unwrap();
    assert_eq!((head.key.as_str(), head.size), ("leases/x/two", 3));
    assert_eq!(b.head_object("leases/x/none").unwrap(), None);
    assert_eq!(b.get_object("leases/x/none").unwrap(), None);
    assert!(b.list_objects("nothing-here").unwrap().is_empty());
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
