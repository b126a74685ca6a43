//! The catalog: the SQLite index of packs, chunks, contents, datasets and their trees.
//!
//! Owns: the only connection to `catalog.db`, its migrations (`schema/*.sql`, applied in
//! order, tracked by `PRAGMA user_version`) and every query. WAL mode with
//! `synchronous=FULL`: a committed transaction survives power loss.
//! Never: reads or writes packs; immutability of sealed datasets is enforced here by triggers
//! as well as by the code above.

mod browse;
mod checks;
mod datasets;
mod diff;
pub mod entries;
mod error;
mod gc;
mod lineage;
mod listings;
mod runs;
mod view;
mod workspaces;

pub use checks::SizeMismatch;
pub use datasets::{DatasetRow, DatasetState, DatasetTotals};
pub use diff::DiffEntry;
pub use entries::{Entry, EntryKind};
pub use gc::{PackUsage, RetiredPack};
pub use lineage::{LineageInput, LineageRecord};
pub use listings::{ListingSize, PAGE_CHILDREN};
pub use runs::RunRow;
pub use view::{ChildName, FileLayout, LaidOutChunk};
pub use workspaces::{BaseRow, WorkspaceRow};

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::id::{ChunkId, ContentId, PackId};
use crate::pack::{Codec, IndexEntry};

const MIGRATIONS: &[&str] = &[
    include_str!("../../schema/0001_init.sql"),
    include_str!("../../schema/0002_workspaces.sql"),
    include_str!("../../schema/0003_runs.sql"),
    include_str!("../../schema/0004_listings.sql"),
];

/// The catalog schema this code migrates to (`PRAGMA user_version`), as docs/FORMAT.md says.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// How long a writer waits for another writer's transaction before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(120);

/// One connection to the catalog.
pub struct Catalog {
    conn: Connection,
    read_only: bool,
}

impl Drop for Catalog {
    /// The last connection to close checkpoints the WAL into `catalog.db`; with a size limit
    /// of 0 it also empties the kept `-wal` file, so no stale log outlives its use (a WAL
    /// left beside a catalog.db that is then replaced would be replayed into the new one).
    fn drop(&mut self) {
        if !self.read_only {
            let _ = self.conn.pragma_update(None, "journal_size_limit", 0);
        }
    }
}

/// A chunk's location, as the catalog knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    pub pack: PackId,
    pub entry: IndexEntry,
}

impl ChunkLocation {
    /// The stored bytes of the chunk: (pack, offset, stored length), what
    /// `Store::advise_chunks` takes.
    pub fn extent(&self) -> (PackId, u64, u64) {
        (self.pack, self.entry.offset, self.entry.stored_len as u64)
    }
}

/// One chunk of a file: where in the file it starts and which chunk it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileChunk {
    pub file_offset: u64,
    pub chunk: ChunkId,
}

/// A file content row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRow {
    pub id: i64,
    pub hash: ContentId,
    pub size: u64,
}

/// A files-cache key: what ingest checks before trusting a remembered hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    pub dev: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

/// An [`IndexEntry`] from five consecutive columns starting at `first`: chunk hash, offset,
/// stored length, raw length, codec (the `chunks` table's layout).
pub(crate) fn index_entry_at(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<IndexEntry> {
    Ok(IndexEntry {
        chunk: ChunkId::from_slice(&r.get::<_, Vec<u8>>(first)?).unwrap_or(ChunkId([0; 32])),
        offset: r.get::<_, i64>(first + 1)? as u64,
        stored_len: r.get(first + 2)?,
        raw_len: r.get(first + 3)?,
        codec: Codec::from_u8(r.get(first + 4)?).unwrap_or(Codec::Raw),
    })
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Switch the catalog to WAL. Changing the journal mode takes an exclusive lock, and SQLite
/// reports `SQLITE_BUSY` at once instead of waiting through the busy handler: when several
/// processes open a new vault at the same moment, retry until the others are done.
fn enable_wal(conn: &Connection) -> Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return Ok(other?),
        }
    }
}

/// Keep `catalog.db-wal` and `catalog.db-shm` when the last connection closes (SQLite
/// deletes them otherwise). A user who may read the vault but not write its folder cannot
/// create them, and SQLite opens a WAL database read-only only when they exist; kept, they
/// let such users read while writers work (docs/sharing.md).
fn persist_wal(conn: &Connection) -> Result<()> {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: the handle is this open connection's; the file control reads and writes one int.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut std::ffi::c_int).cast(),
        )
    };
    if rc != rusqlite::ffi::SQLITE_OK {
        return Err(rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rc), None).into());
    }
    Ok(())
}

/// Settings every connection gets, read-only or not.
fn configure(conn: &Connection) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.set_prepared_statement_cache_capacity(64);
    // Plans that do not depend on bound values: otherwise a value read while planning
    // (`LIMIT ?`, for one) makes SQLite prepare the statement again on every run, which
    // was a third of the catalog time of a mount listing folders.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    Ok(())
}

impl Catalog {
    /// Open (creating and migrating if needed) the catalog at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)?;
        persist_wal(&conn)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        enable_wal(&conn)?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        configure(&conn)?;
        let catalog = Catalog { conn, read_only: false };
        catalog.migrate(path)?;
        Ok(catalog)
    }

    /// Open the catalog at `path` for reading only, for a user who may not write the
    /// vault: nothing is created or changed beside it. SQLite reads the WAL through the
    /// existing, read-only `-shm` file (or, when no other process has the catalog open, from
    /// the WAL itself), so writers working at the same time are seen safely. `immutable=1`
    /// is never used: it would let a concurrent ingest's checkpoint change pages under the
    /// reader. A catalog without its `-wal`/`-shm` files (made before they were kept, and
    /// idle since) cannot be read this way: [`Error::CatalogNotShared`].
    pub fn open_read_only(path: &Path) -> Result<Self> {
        use rusqlite::OpenFlags;
        if !crate::sharing::may(path, libc::R_OK) {
            return Err(Error::io(
                "opening the catalog",
                path,
                std::io::Error::from_raw_os_error(libc::EACCES),
            ));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        configure(&conn)?;
        let version: usize = match conn.pragma_query_value(None, "user_version", |r| r.get(0)) {
            Ok(v) => v,
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen) =>
            {
                return Err(Error::CatalogNotShared(path.to_path_buf()));
            }
            Err(e) => return Err(e.into()),
        };
        if version < MIGRATIONS.len() {
            return Err(Error::CatalogOutdated(path.to_path_buf()));
        }
        if version > MIGRATIONS.len() {
            return Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                found: version as u32,
                supported: MIGRATIONS.len() as u32,
            });
        }
        Ok(Catalog { conn, read_only: true })
    }

    fn migrate(&self, path: &Path) -> Result<()> {
        let version: usize = self.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > MIGRATIONS.len() {
            return Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                found: version as u32,
                supported: MIGRATIONS.len() as u32,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            self.transaction(|c| {
                // Another process may have applied it since we looked (two first ingests
                // into a new vault at once); inside the write lock the answer is final.
                let now: usize = c.conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
                if now > i {
                    return Ok(());
                }
                c.conn.execute_batch(sql)?;
                if i + 1 == listings::SCHEMA {
                    c.backfill_listings()?;
                }
                c.conn.pragma_update(None, "user_version", i + 1)?;
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Run `f` in an IMMEDIATE transaction: committed if it returns Ok, rolled back otherwise.
    pub fn transaction<T>(&self, f: impl FnOnce(&Catalog) -> Result<T>) -> Result<T> {
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        match f(self) {
            Ok(v) => {
                self.conn.execute_batch("COMMIT")?;
                Ok(v)
            }
            Err(e) => {
                let _ = self.conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    }

    /// The connection, for this module's submodules only: no code outside `catalog` runs SQL.
    fn conn(&self) -> &Connection {
        &self.conn
    }

    // ---- packs and chunks -------------------------------------------------------------

    /// Record a published pack and its chunks (chunks already known elsewhere are kept where
    /// they are). Returns the number of chunks newly recorded.
    pub fn insert_pack(&self, pack: PackId, size: u64, entries: &[IndexEntry]) -> Result<usize> {
        self.conn
            .prepare_cached("INSERT OR IGNORE INTO packs (hash, size, chunk_count, added_at) VALUES (?1, ?2, ?3, ?4)")?
            .execute(params![pack.as_bytes(), size as i64, entries.len() as i64, now_secs()])?;
        // A pack gc retired may be published again with the same bytes: it is live again.
        self.conn
            .prepare_cached("DELETE FROM retired_packs WHERE hash = ?1")?
            .execute([pack.as_bytes()])?;
        let pack_id: i64 = self
            .conn
            .prepare_cached("SELECT id FROM packs WHERE hash = ?1")?
            .query_row([pack.as_bytes()], |r| r.get(0))?;
        let mut insert = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO chunks (hash, pack_id, offset, stored_len, raw_len, codec) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut added = 0;
        for e in entries {
            added += insert.execute(params![
                e.chunk.as_bytes(),
                pack_id,
                e.offset as i64,
                e.stored_len,
                e.raw_len,
                e.codec as u8
            ])?;
        }
        Ok(added)
    }

    /// Is this chunk stored?
    pub fn has_chunk(&self, chunk: ChunkId) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM chunks WHERE hash = ?1")?
            .query_row([chunk.as_bytes()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Where a chunk is stored.
    pub fn chunk_location(&self, chunk: ChunkId) -> Result<ChunkLocation> {
        self.conn
            .prepare_cached(
                "SELECT p.hash, c.offset, c.stored_len, c.raw_len, c.codec FROM chunks c JOIN packs p ON p.id = c.pack_id WHERE c.hash = ?1",
            )?
            .query_row([chunk.as_bytes()], |r| {
                let pack: Vec<u8> = r.get(0)?;
                Ok(ChunkLocation {
                    pack: PackId::from_slice(&pack).unwrap_or(PackId([0; 32])),
                    entry: IndexEntry {
                        chunk,
                        offset: r.get::<_, i64>(1)? as u64,
                        stored_len: r.get(2)?,
                        raw_len: r.get(3)?,
                        codec: Codec::from_u8(r.get(4)?).unwrap_or(Codec::Raw),
                    },
                })
            })
            .optional()?
            .ok_or(Error::MissingChunk(chunk))
    }

    /// Every pack the catalog knows, with its recorded size.
    pub fn packs(&self) -> Result<Vec<(PackId, u64)>> {
        let mut stmt = self.conn.prepare("SELECT hash, size FROM packs ORDER BY hash")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?)))?;
        rows.map(|r| {
            r.map(|(h, s)| (PackId::from_slice(&h).unwrap_or(PackId([0; 32])), s as u64))
                .map_err(Error::from)
        })
        .collect()
    }

    /// Does the catalog know this pack?
    pub fn has_pack(&self, pack: PackId) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached("SELECT 1 FROM packs WHERE hash = ?1")?
            .query_row([pack.as_bytes()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// Chunks the catalog places in a pack.
    pub fn chunks_in_pack(&self, pack: PackId) -> Result<Vec<IndexEntry>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT c.hash, c.offset, c.stored_len, c.raw_len, c.codec FROM chunks c JOIN packs p ON p.id = c.pack_id WHERE p.hash = ?1 ORDER BY c.offset",
        )?;
        let rows = stmt.query_map([pack.as_bytes()], |r| index_entry_at(r, 0))?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    // ---- contents ---------------------------------------------------------------------

    /// A stored file content by hash.
    pub fn content(&self, hash: ContentId) -> Result<Option<ContentRow>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id, size FROM contents WHERE hash = ?1")?
            .query_row([hash.as_bytes()], |r| {
                Ok(ContentRow {
                    id: r.get(0)?,
                    hash,
                    size: r.get::<_, i64>(1)? as u64,
                })
            })
            .optional()?)
    }

    /// Record a file content and its chunk list (every chunk must already be recorded).
    pub fn insert_content(&self, hash: ContentId, size: u64, chunks: &[FileChunk]) -> Result<i64> {
        if let Some(row) = self.content(hash)? {
            return Ok(row.id);
        }
        if chunks.is_empty() && size > 0 {
            // A reference to content that is gone (collected since it was looked up).
            return Err(Error::MissingContent(hash));
        }
        self.conn
            .prepare_cached("INSERT INTO contents (hash, size, chunk_count) VALUES (?1, ?2, ?3)")?
            .execute(params![hash.as_bytes(), size as i64, chunks.len() as i64])?;
        let id = self.conn.last_insert_rowid();
        let mut insert = self
            .conn
            .prepare_cached("INSERT INTO content_chunks (content_id, file_offset, chunk_hash) VALUES (?1, ?2, ?3)")?;
        for c in chunks {
            insert.execute(params![id, c.file_offset as i64, c.chunk.as_bytes()])?;
        }
        Ok(id)
    }

    /// A content's chunks in file order.
    pub fn content_chunks(&self, content_id: i64) -> Result<Vec<FileChunk>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT file_offset, chunk_hash FROM content_chunks WHERE content_id = ?1 ORDER BY file_offset",
        )?;
        let rows = stmt.query_map([content_id], |r| {
            Ok(FileChunk {
                file_offset: r.get::<_, i64>(0)? as u64,
                chunk: ChunkId::from_slice(&r.get::<_, Vec<u8>>(1)?).unwrap_or(ChunkId([0; 32])),
            })
        })?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }

    // ---- files cache ------------------------------------------------------------------

    /// The content hash remembered for a source path, if its stamp is unchanged.
    pub fn cached_hash(&self, path: &[u8], stamp: &FileStamp) -> Result<Option<ContentId>> {
        let row: Option<(i64, i64, i64, i64, i64, Vec<u8>)> = self
            .conn
            .prepare_cached(
                "SELECT dev, inode, size, mtime_ns, ctime_ns, content_hash FROM files_cache WHERE path = ?1",
            )?
            .query_row([path], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
            })
            .optional()?;
        Ok(row.and_then(|(dev, inode, size, mtime, ctime, hash)| {
            let same = dev as u64 == stamp.dev
                && inode as u64 == stamp.inode
                && size as u64 == stamp.size
                && mtime == stamp.mtime_ns
                && ctime == stamp.ctime_ns;
            if same {
                ContentId::from_slice(&hash)
            } else {
                None
            }
        }))
    }

    /// Remember a source file's content hash.
    pub fn remember_hash(&self, path: &[u8], stamp: &FileStamp, hash: ContentId) -> Result<()> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO files_cache (path, dev, inode, size, mtime_ns, ctime_ns, content_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
            .execute(params![path, stamp.dev as i64, stamp.inode as i64, stamp.size as i64, stamp.mtime_ns, stamp.ctime_ns, hash.as_bytes()])?;
        Ok(())
    }

    // ---- vault-wide figures -----------------------------------------------------------

    /// Total bytes of all packs.
    pub fn stored_bytes_total(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(SUM(size), 0) FROM packs", [], |r| r.get::<_, i64>(0))? as u64)
    }

    /// Where a damaged chunk is used: (dataset, path) pairs over sealed datasets.
    pub fn chunk_users(&self, chunk: ChunkId) -> Result<Vec<(String, Vec<u8>)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.kind || '/' || d.name || '@' || d.version, e.parent, e.name
             FROM content_chunks cc JOIN entries e ON e.content_id = cc.content_id JOIN datasets d ON d.id = e.dataset_id
             WHERE cc.chunk_hash = ?1 AND d.state = 'sealed' ORDER BY 1, 2, 3",
        )?;
        let rows = stmt.query_map([chunk.as_bytes()], |r| {
            Ok((
                r.get::<_, String>(0)?,
                entries::join_path(&r.get::<_, Vec<u8>>(1)?, &r.get::<_, Vec<u8>>(2)?),
            ))
        })?;
        rows.map(|r| r.map_err(Error::from)).collect()
    }
}
