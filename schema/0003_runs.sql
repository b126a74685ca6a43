-- dsvault catalog, version 3: commands run in workspaces by `dsvault run`.
-- Never edit a released migration: add 0004_... instead. See docs/workspaces.md (run).

-- One row per `dsvault run`, written when the command has exited (whatever its status),
-- and given the derived dataset's name once `--derive` has sealed it. No foreign key: a
-- run stays on record after its workspace or dataset is removed.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace   TEXT    NOT NULL,
    command     TEXT    NOT NULL,              -- JSON array of the arguments
    started_at  INTEGER NOT NULL,              -- unix seconds
    ended_at    INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    exit_status INTEGER NOT NULL,              -- exit code, or 128 + signal number
    derived     TEXT                           -- derived/NAME@VERSION when --derive sealed it
);
CREATE INDEX runs_by_workspace ON runs(workspace);
