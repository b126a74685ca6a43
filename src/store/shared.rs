//! The objects of the shared-bucket protocol (docs/ARCHITECTURE.md, "gc on a shared bucket"):
//! writers' leases, gc's condemned lists, workspaces' pins, and the protocol marker.
//!
//! Owns: writing and reading those objects; while a lease is held, refusing a pack, manifest or
//! lineage record whose key a gc has condemned, and checking the lease against the store clock
//! before and after a ref is created (retracting a ref created too late).
//! Never: decides what is live or dead (that is `ops::shared_gc`); reads a machine's own clock.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::backend::{nonce, PutKind};
use super::{ObjectInfo, RefOutcome, Store};
use crate::error::{Error, Result};
use crate::id::RootHash;

/// The protocol this build speaks; a store marked with a higher one is refused for writes.
pub const PROTOCOL: u32 = 1;
/// Store times have one-second resolution: events less than this apart are never taken as
/// ordered.
pub const MARGIN_SECS: i64 = 2;
pub const LEASES: &str = "leases";
pub const CONDEMNED: &str = "gc/condemned";
pub const PINS: &str = "pins";
pub const SPARED: &str = "gc/spared";
const MARKER: &str = "dsvault-store.json";

/// What a lease says (for people looking at the bucket; gc reads only its time).
#[derive(Debug, Serialize, Deserialize)]
pub struct LeaseBody {
    pub purpose: String,
    pub host: String,
    pub pid: u32,
}

/// A condemned list as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CondemnedBody {
    pub protocol: u32,
    pub objects: Vec<CondemnedObject>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CondemnedObject {
    pub key: String,
    pub size: u64,
    /// Why it is dead, for `--dry-run` and people.
    pub why: String,
}

/// A condemned list found in the store, with its store time.
#[derive(Debug, Clone)]
pub struct CondemnedList {
    pub key: String,
    pub time: i64,
    pub objects: Vec<CondemnedObject>,
}

/// A writer's note that objects of a condemned list are live again (a dataset whose ref it
/// checked after writing this note uses them): gc deletes none of them with that list.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SparedBody {
    /// The key of the condemned list.
    pub list: String,
    pub keys: Vec<String>,
}

/// A pin: the roots a workspace needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PinBody {
    pub workspace: String,
    pub host: String,
    /// `(dataset, root hex)` of each base.
    pub bases: Vec<(String, String)>,
}

/// The lease this process holds while it writes (at most one at a time).
#[derive(Debug, Clone)]
pub(crate) struct ActiveLease {
    key: String,
    time: i64,
    ttl: i64,
    avoid: HashSet<String>,
}

/// Held while a writer works; deletes its lease when dropped.
#[must_use = "the lease is given up when this is dropped"]
pub struct LeaseGuard<'a> {
    store: &'a Store,
    owned: bool,
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let active = self.store.lease.lock().expect("lease lock").take();
        if let Some(l) = active {
            crate::crashpoint::hit("lease-before-remove");
            let _ = self.store.backend.delete_object(&l.key);
        }
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("plain structs serialize")
}

fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

impl Store {
    /// Does this store run the shared-bucket protocol (leases, two-phase gc)? Object stores
    /// do: they are what many machines share.
    pub fn is_shared(&self) -> bool {
        self.reads_are_requests()
    }

    /// The store's protocol marker, created (create-only: the first writer or gc wins) with
    /// `lease_ttl_secs` when missing. Returns the lease TTL every machine uses on this store,
    /// and refuses a store marked with a protocol newer than this build's.
    pub fn protocol(&self, lease_ttl_secs: u64) -> Result<i64> {
        let body = format!("{{\"protocol\": {PROTOCOL}, \"lease_ttl_secs\": {lease_ttl_secs}}}\n");
        self.backend.put_object(MARKER, body.as_bytes(), PutKind::Create)?;
        let bytes = self.backend.get_object(MARKER)?.unwrap_or_default();
        let marker: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let found = marker["protocol"].as_u64().unwrap_or(u64::MAX);
        if found > PROTOCOL as u64 {
            return Err(Error::SharedStore(format!(
                "store {} speaks protocol {found}, this dsvault only {PROTOCOL}; upgrade dsvault before writing to it",
                self.describe()
            )));
        }
        marker["lease_ttl_secs"].as_u64().map(|t| t as i64).ok_or_else(|| {
            Error::SharedStore(format!(
                "{}/{MARKER} is damaged (no lease_ttl_secs): {}",
                self.describe(),
                String::from_utf8_lossy(&bytes)
            ))
        })
    }

    /// Start writing on a shared store: write a lease, then read every condemned list, whose
    /// keys this process must not rely on until the lease is dropped. `ttl_secs` is this
    /// vault's setting, used only if the store has no protocol marker yet. Returns the guard and
    /// the condemned keys. A store that is not shared gets a guard that does nothing.
    pub fn begin_lease(&self, purpose: &str, ttl_secs: u64) -> Result<(LeaseGuard<'_>, Vec<CondemnedList>)> {
        if !self.is_shared() || self.lease.lock().expect("lease lock").is_some() {
            return Ok((
                LeaseGuard {
                    store: self,
                    owned: false,
                },
                Vec::new(),
            ));
        }
        let ttl = self.protocol(ttl_secs)?;
        let key = format!("{LEASES}/{}.json", nonce());
        let body = to_json(&LeaseBody {
            purpose: purpose.to_string(),
            host: host(),
            pid: std::process::id(),
        });
        self.backend.put_object(&key, &body, PutKind::Create)?;
        let guard = LeaseGuard {
            store: self,
            owned: true,
        };
        let time = self.object_time(&key)?;
        crate::crashpoint::hit("lease-after-write");
        let lists = self.condemned_lists()?;
        let avoid: HashSet<String> = lists
            .iter()
            .flat_map(|c| c.objects.iter().map(|o| o.key.clone()))
            .collect();
        *self.lease.lock().expect("lease lock") = Some(ActiveLease { key, time, ttl, avoid });
        crate::crashpoint::hit("lease-after-check");
        Ok((guard, lists))
    }

    /// The store time of an object just written.
    fn object_time(&self, key: &str) -> Result<i64> {
        self.backend
            .head_object(key)?
            .map(|i| i.modified)
            .ok_or_else(|| Error::UploadCheck {
                location: format!("{}/{key}", self.describe()),
                detail: "has no object there right after writing it".into(),
            })
    }

    /// Refuse to write `key` when the held lease's gc condemned it: the same bytes written
    /// again would be deleted under this writer.
    pub(crate) fn check_not_condemned(&self, key: &str) -> Result<()> {
        let lease = self.lease.lock().expect("lease lock");
        match lease.as_ref() {
            Some(l) if l.avoid.contains(key) => Err(Error::SharedStore(format!(
                "{}/{key} was condemned by a gc run and is about to be deleted; this writer needs the same object, so it stops here (nothing was published): run it again after the next `dsvault gc`",
                self.describe()
            ))),
            _ => Ok(()),
        }
    }

    /// A store time must be before the held lease's end, else the writer stops.
    fn check_lease_at(&self, now: i64, what: &str) -> Result<()> {
        let lease = self.lease.lock().expect("lease lock").clone();
        let Some(l) = lease else { return Ok(()) };
        if now - l.time < l.ttl {
            return Ok(());
        }
        Err(Error::SharedStore(format!(
            "this writer's lease on {} ran out ({}s after it was taken, the TTL is {}s; was the process paused?) {what}; a gc may have deleted packs it relies on: run it again",
            self.describe(),
            now - l.time,
            l.ttl
        )))
    }

    /// Create a ref under the held lease: the store clock must be within the lease before,
    /// and the ref's own time after; a ref created too late is deleted again.
    pub(crate) fn create_ref_leased(
        &self,
        kind: &str,
        name: &str,
        version: &str,
        root: RootHash,
    ) -> Result<RefOutcome> {
        let leased = self.lease.lock().expect("lease lock").is_some();
        if !leased {
            return self.backend.create_ref(kind, name, version, root);
        }
        self.check_lease_at(self.server_time()?, "before its ref was written")?;
        crate::crashpoint::hit("lease-before-ref");
        let outcome = self.backend.create_ref(kind, name, version, root)?;
        if outcome == RefOutcome::Created {
            let key = super::ref_key(kind, name, version);
            let at = self.object_time(&key)?;
            if let Err(e) = self.check_lease_at(at, "when its ref was written") {
                self.backend.remove_ref(kind, name, version)?;
                return Err(e);
            }
        }
        Ok(outcome)
    }

    /// Every condemned list, with its store time.
    pub fn condemned_lists(&self) -> Result<Vec<CondemnedList>> {
        let mut out = Vec::new();
        for info in self.backend.list_objects(CONDEMNED)? {
            let Some(bytes) = self.backend.get_object(&info.key)? else {
                continue; // deleted by a gc since the listing: nothing left to avoid
            };
            let body: CondemnedBody = serde_json::from_slice(&bytes)
                .map_err(|e| Error::SharedStore(format!("{}/{} is damaged: {e}", self.describe(), info.key)))?;
            out.push(CondemnedList {
                key: info.key,
                time: info.modified,
                objects: body.objects,
            });
        }
        Ok(out)
    }

    /// Write a new condemned list; returns its key.
    pub fn write_condemned(&self, objects: Vec<CondemnedObject>) -> Result<String> {
        let key = format!("{CONDEMNED}/{}.json", nonce());
        let body = to_json(&CondemnedBody {
            protocol: PROTOCOL,
            objects,
        });
        self.backend.put_object(&key, &body, PutKind::Create)?;
        Ok(key)
    }

    /// Note that `keys` of condemned list `list` are live again (before checking the refs that
    /// make them live), and stop avoiding them.
    pub fn write_spared(&self, list: &str, keys: Vec<String>) -> Result<()> {
        let key = format!("{SPARED}/{}.json", nonce());
        if let Some(l) = self.lease.lock().expect("lease lock").as_mut() {
            for k in &keys {
                l.avoid.remove(k);
            }
        }
        let body = to_json(&SparedBody {
            list: list.to_string(),
            keys,
        });
        self.backend.put_object(&key, &body, PutKind::Create).map(|_| ())
    }

    /// Every spared note, with its key.
    pub fn spared(&self) -> Result<Vec<(String, SparedBody)>> {
        let mut out = Vec::new();
        for info in self.backend.list_objects(SPARED)? {
            let Some(bytes) = self.backend.get_object(&info.key)? else {
                continue;
            };
            let body: SparedBody = serde_json::from_slice(&bytes)
                .map_err(|e| Error::SharedStore(format!("{}/{} is damaged: {e}", self.describe(), info.key)))?;
            out.push((info.key, body));
        }
        Ok(out)
    }

    /// Every lease in the store.
    pub fn leases(&self) -> Result<Vec<ObjectInfo>> {
        self.backend.list_objects(LEASES)
    }

    /// Pin the roots of a workspace's bases, under a lease; returns the pin's key.
    pub fn put_pin(&self, pin: &PinBody) -> Result<String> {
        let key = format!("{PINS}/{}.json", nonce());
        for (_, root) in &pin.bases {
            self.check_not_condemned(&format!("manifests/{root}.json"))?;
        }
        self.check_lease_at(self.server_time()?, "before its pin was written")?;
        self.backend.put_object(&key, &to_json(pin), PutKind::Create)?;
        let at = self.object_time(&key)?;
        if let Err(e) = self.check_lease_at(at, "when its pin was written") {
            self.backend.delete_object(&key)?;
            return Err(e);
        }
        Ok(key)
    }

    pub fn remove_pin(&self, key: &str) -> Result<()> {
        self.backend.delete_object(key)
    }

    /// Every pin, with its key.
    pub fn pins(&self) -> Result<Vec<(String, PinBody)>> {
        let mut out = Vec::new();
        for info in self.backend.list_objects(PINS)? {
            let Some(bytes) = self.backend.get_object(&info.key)? else {
                continue;
            };
            let pin: PinBody = serde_json::from_slice(&bytes)
                .map_err(|e| Error::SharedStore(format!("{}/{} is damaged: {e}", self.describe(), info.key)))?;
            out.push((info.key, pin));
        }
        Ok(out)
    }
}
