-- dsvault catalog, version 2: workspaces, lineage, removal of sealed datasets, gc bookkeeping.
-- Never edit a released migration: add 0003_... instead. See docs/FORMAT.md and
-- docs/workspaces.md for what each table means.

-- A workspace: a writable upper layer (<vault>/workspaces/<name>/upper/) over zero or more
-- sealed base datasets. Its name follows the dataset-name alphabet.
CREATE TABLE workspaces (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL UNIQUE,
    state      TEXT    NOT NULL CHECK (state IN ('live')),
    created_at INTEGER NOT NULL                -- unix seconds
);

-- A workspace's base datasets, in order: a later base overrides an earlier one on the same
-- path, the upper layer overrides them all. The root pins the exact content; the foreign key
-- keeps a base from being removed while the workspace lives.
CREATE TABLE workspace_bases (
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    position     INTEGER NOT NULL,
    dataset_id   INTEGER NOT NULL REFERENCES datasets(id),
    root         BLOB    NOT NULL,
    PRIMARY KEY (workspace_id, position)
) WITHOUT ROWID;
CREATE INDEX workspace_bases_by_dataset ON workspace_bases(dataset_id);

-- Deleted paths of a workspace: a whiteout hides the bases' entry at `path` and everything
-- below it. It never hides the upper layer (a file created again after a delete is visible).
CREATE TABLE whiteouts (
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    path         BLOB    NOT NULL,             -- dataset-relative path bytes, no leading '/'
    PRIMARY KEY (workspace_id, path)
) WITHOUT ROWID;

-- Lineage of a derived dataset: written while the dataset is pending, in its seal
-- transaction, and immutable once it is sealed.
CREATE TABLE lineage (
    dataset_id  INTEGER PRIMARY KEY REFERENCES datasets(id),
    workspace   TEXT    NOT NULL,
    command     TEXT,                          -- as given by --command or `run`
    user        TEXT,
    host        TEXT,
    started_at  INTEGER,                       -- unix seconds of the producing command, if known
    ended_at    INTEGER,
    exit_status INTEGER,                       -- of the producing command, if known
    derived_at  INTEGER NOT NULL               -- when derive started
);

-- The inputs of a derived dataset, by name and root: they stay readable after an input is
-- removed (no foreign key to datasets).
CREATE TABLE lineage_inputs (
    dataset_id INTEGER NOT NULL REFERENCES lineage(dataset_id),
    position   INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    version    TEXT    NOT NULL,
    root       BLOB    NOT NULL,
    PRIMARY KEY (dataset_id, position)
) WITHOUT ROWID;

-- Removal of sealed datasets. A sealed dataset (and its entries and lineage) can only be
-- deleted while an open removals row (done = 0) names it; `rm` inserts that row, deletes, and
-- closes the row in one transaction, so the log keeps who was removed and when. Gold needs
-- forced = 1, which only `rm --force-gold` sets.
CREATE TABLE removals (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset_id INTEGER NOT NULL,
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    version    TEXT    NOT NULL,
    root       BLOB,
    forced     INTEGER NOT NULL DEFAULT 0,
    removed_at INTEGER NOT NULL,
    done       INTEGER NOT NULL DEFAULT 0
);

CREATE TRIGGER removals_gold_needs_force BEFORE INSERT ON removals
WHEN NEW.kind = 'gold' AND NEW.forced IS NOT 1
BEGIN SELECT RAISE(ABORT, 'dsvault: gold datasets can only be removed with --force-gold'); END;

CREATE TRIGGER removals_no_update BEFORE UPDATE ON removals
WHEN OLD.done = 1 OR NEW.done IS NOT 1 OR NEW.dataset_id IS NOT OLD.dataset_id
BEGIN SELECT RAISE(ABORT, 'dsvault: the removals log is append-only'); END;

CREATE TRIGGER removals_no_delete BEFORE DELETE ON removals
BEGIN SELECT RAISE(ABORT, 'dsvault: the removals log is append-only'); END;

DROP TRIGGER sealed_dataset_no_delete;
CREATE TRIGGER sealed_dataset_no_delete BEFORE DELETE ON datasets
WHEN OLD.state = 'sealed' AND NOT EXISTS (
    SELECT 1 FROM removals r WHERE r.dataset_id = OLD.id AND r.done = 0 AND r.kind = OLD.kind
      AND r.name = OLD.name AND r.version = OLD.version)
BEGIN SELECT RAISE(ABORT, 'dsvault: sealed datasets are immutable'); END;

DROP TRIGGER sealed_entries_no_delete;
CREATE TRIGGER sealed_entries_no_delete BEFORE DELETE ON entries
WHEN (SELECT state FROM datasets WHERE id = OLD.dataset_id) = 'sealed' AND NOT EXISTS (
    SELECT 1 FROM removals r WHERE r.dataset_id = OLD.dataset_id AND r.done = 0)
BEGIN SELECT RAISE(ABORT, 'dsvault: sealed datasets are immutable'); END;

CREATE TRIGGER lineage_sealed_no_insert BEFORE INSERT ON lineage
WHEN (SELECT state FROM datasets WHERE id = NEW.dataset_id) IS NOT 'pending'
BEGIN SELECT RAISE(ABORT, 'dsvault: lineage can only be added to a pending dataset'); END;

CREATE TRIGGER lineage_no_update BEFORE UPDATE ON lineage
BEGIN SELECT RAISE(ABORT, 'dsvault: lineage is immutable'); END;

CREATE TRIGGER lineage_no_delete BEFORE DELETE ON lineage
WHEN (SELECT state FROM datasets WHERE id = OLD.dataset_id) = 'sealed' AND NOT EXISTS (
    SELECT 1 FROM removals r WHERE r.dataset_id = OLD.dataset_id AND r.done = 0)
BEGIN SELECT RAISE(ABORT, 'dsvault: lineage is immutable'); END;

CREATE TRIGGER lineage_inputs_sealed_no_insert BEFORE INSERT ON lineage_inputs
WHEN (SELECT state FROM datasets WHERE id = NEW.dataset_id) IS NOT 'pending'
BEGIN SELECT RAISE(ABORT, 'dsvault: lineage can only be added to a pending dataset'); END;

CREATE TRIGGER lineage_inputs_no_update BEFORE UPDATE ON lineage_inputs
BEGIN SELECT RAISE(ABORT, 'dsvault: lineage is immutable'); END;

CREATE TRIGGER lineage_inputs_no_delete BEFORE DELETE ON lineage_inputs
WHEN (SELECT state FROM datasets WHERE id = OLD.dataset_id) = 'sealed' AND NOT EXISTS (
    SELECT 1 FROM removals r WHERE r.dataset_id = OLD.dataset_id AND r.done = 0)
BEGIN SELECT RAISE(ABORT, 'dsvault: lineage is immutable'); END;

-- Packs gc has dropped from the catalog (their live chunks were copied elsewhere first).
-- The file stays in the store until it has been retired for the grace period, so a mount
-- that looked up a chunk location just before the change can still read it.
CREATE TABLE retired_packs (
    hash       BLOB    PRIMARY KEY,
    retired_at INTEGER NOT NULL
) WITHOUT ROWID;
