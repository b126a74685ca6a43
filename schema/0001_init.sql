-- dsvault catalog, version 1. Never edit a released migration: add 0002_... instead.
-- The catalog is an index over the store: every row here can be rebuilt from pack indexes
-- (packs, chunks) and manifests (datasets, entries, contents); see docs/FORMAT.md.

-- One row per pack published to the store.
CREATE TABLE packs (
    id          INTEGER PRIMARY KEY,
    hash        BLOB    NOT NULL UNIQUE,       -- blake3 of the pack file
    size        INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL,
    added_at    INTEGER NOT NULL               -- unix seconds
);

-- Where each chunk lives. A chunk is in exactly one pack (dedup happens before writing).
CREATE TABLE chunks (
    hash       BLOB    PRIMARY KEY,            -- blake3 of the raw chunk bytes
    pack_id    INTEGER NOT NULL REFERENCES packs(id),
    offset     INTEGER NOT NULL,
    stored_len INTEGER NOT NULL,
    raw_len    INTEGER NOT NULL,
    codec      INTEGER NOT NULL                -- 0 raw, 1 zstd
) WITHOUT ROWID;
CREATE INDEX chunks_by_pack ON chunks(pack_id);

-- File contents, named by the blake3 hash of the whole file.
CREATE TABLE contents (
    id          INTEGER PRIMARY KEY,
    hash        BLOB    NOT NULL UNIQUE,
    size        INTEGER NOT NULL,
    chunk_count INTEGER NOT NULL
);

-- A content's chunks in order; file_offset lets a reader find the chunk covering an offset.
CREATE TABLE content_chunks (
    content_id  INTEGER NOT NULL REFERENCES contents(id),
    file_offset INTEGER NOT NULL,
    chunk_hash  BLOB    NOT NULL,
    PRIMARY KEY (content_id, file_offset)
) WITHOUT ROWID;
CREATE INDEX content_chunks_by_chunk ON content_chunks(chunk_hash);

-- Datasets. Only 'sealed' ones are visible; 'pending' rows belong to an ingest in progress
-- (or one that was killed, which the next ingest of the same name clears).
CREATE TABLE datasets (
    id           INTEGER PRIMARY KEY,
    kind         TEXT    NOT NULL CHECK (kind IN ('gold', 'derived')),
    name         TEXT    NOT NULL,
    version      TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('pending', 'sealed')),
    root         BLOB,
    files        INTEGER NOT NULL DEFAULT 0,
    dirs         INTEGER NOT NULL DEFAULT 0,
    symlinks     INTEGER NOT NULL DEFAULT 0,
    bytes        INTEGER NOT NULL DEFAULT 0,   -- logical: sum of file sizes
    stored_bytes INTEGER NOT NULL DEFAULT 0,   -- new bytes this ingest added to the store
    source       TEXT,
    pid          INTEGER,
    host         TEXT,
    created_at   INTEGER NOT NULL,
    sealed_at    INTEGER
);
-- At most one sealed dataset per name; any number of pending attempts (concurrent or killed).
CREATE UNIQUE INDEX datasets_sealed_name ON datasets(kind, name, version) WHERE state = 'sealed';

-- The tree of each dataset. id is stable: the mount derives inode numbers from it.
CREATE TABLE entries (
    id         INTEGER PRIMARY KEY,
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    parent     BLOB    NOT NULL,               -- parent path in the dataset, '' at top level
    name       BLOB    NOT NULL,               -- raw file name bytes (may be non-UTF-8)
    kind       INTEGER NOT NULL,               -- 0 file, 1 dir, 2 symlink
    mode       INTEGER NOT NULL,               -- permission bits at ingest
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    content_id INTEGER REFERENCES contents(id),
    target     BLOB,                           -- symlink target bytes
    UNIQUE (dataset_id, parent, name)
);
CREATE INDEX entries_by_content ON entries(content_id);

-- Ingest's memory of source files: unchanged (dev, inode, size, mtime, ctime) means the
-- content hash is still right and the file need not be read again.
CREATE TABLE files_cache (
    path         BLOB    PRIMARY KEY,          -- absolute source path bytes
    dev          INTEGER NOT NULL,
    inode        INTEGER NOT NULL,
    size         INTEGER NOT NULL,
    mtime_ns     INTEGER NOT NULL,
    ctime_ns     INTEGER NOT NULL,
    content_hash BLOB    NOT NULL
) WITHOUT ROWID;

-- Immutability of sealed datasets, enforced by the database itself.
CREATE TRIGGER sealed_dataset_no_update BEFORE UPDATE ON datasets
WHEN OLD.state = 'sealed'
BEGIN SELECT RAISE(ABORT, 'dsvault: sealed datasets are immutable'); END;

CREATE TRIGGER sealed_dataset_no_delete BEFORE DELETE ON datasets
WHEN OLD.state = 'sealed'
BEGIN SELECT RAISE(ABORT, 'dsvault: sealed datasets are immutable'); END;

CREATE TRIGGER sealed_entries_no_insert BEFORE INSERT ON entries
WHEN (SELECT state FROM datasets WHERE id = NEW.dataset_id) IS NOT 'pending'
BEGIN SELECT RAISE(ABORT, 'dsvault: entries can only be added to a pending dataset'); END;

CREATE TRIGGER sealed_entries_no_update BEFORE UPDATE ON entries
WHEN (SELECT state FROM datasets WHERE id = OLD.dataset_id) = 'sealed'
BEGIN SELECT RAISE(ABORT, 'dsvault: sealed datasets are immutable'); END;

CREATE TRIGGER sealed_entries_no_delete BEFORE DELETE ON entries
WHEN (SELECT state FROM datasets WHERE id = OLD.dataset_id) = 'sealed'
BEGIN SELECT RAISE(ABORT, 'dsvault: sealed datasets are immutable'); END;

CREATE TRIGGER contents_no_update BEFORE UPDATE OF hash, size ON contents
BEGIN SELECT RAISE(ABORT, 'dsvault: contents are immutable'); END;

CREATE TRIGGER content_chunks_no_update BEFORE UPDATE ON content_chunks
BEGIN SELECT RAISE(ABORT, 'dsvault: contents are immutable'); END;

CREATE TRIGGER content_chunks_no_delete_live BEFORE DELETE ON content_chunks
WHEN EXISTS (SELECT 1 FROM entries WHERE content_id = OLD.content_id)
BEGIN SELECT RAISE(ABORT, 'dsvault: content is referenced by a dataset'); END;

CREATE TRIGGER chunks_no_delete_live BEFORE DELETE ON chunks
WHEN EXISTS (SELECT 1 FROM content_chunks WHERE chunk_hash = OLD.hash)
BEGIN SELECT RAISE(ABORT, 'dsvault: chunk is referenced by a file'); END;
