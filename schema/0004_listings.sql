-- Folder listings: the children of each folder of a dataset (entry id, kind and name, in
-- name order) packed in pages of 1,024, written with the dataset's seal. A mount lists a
-- folder by reading one row per page instead of an index entry and a table row per child
-- (docs/mount.md, "Listings"). Encoding: docs/FORMAT.md. Every folder has page 0, empty for
-- an empty folder; datasets sealed before this schema have no rows and list from entries.
CREATE TABLE listings (
    dataset_id INTEGER NOT NULL REFERENCES datasets(id),
    parent     BLOB    NOT NULL,               -- the folder's path in the dataset, '' at top level
    page       INTEGER NOT NULL,               -- children page * 1024 onwards, in name order
    count      INTEGER NOT NULL,               -- children on this page (1 to 1024; 0 only on an empty folder's page 0)
    packed     BLOB    NOT NULL,               -- those children, encoded
    PRIMARY KEY (dataset_id, parent, page)
) WITHOUT ROWID;

-- Like entries: written only while the dataset is pending, never changed, deleted only with
-- a pending dataset or under an open removal (schema 2).
CREATE TRIGGER listings_sealed_no_insert BEFORE INSERT ON listings
WHEN (SELECT state FROM datasets WHERE id = NEW.dataset_id) IS NOT 'pending'
BEGIN SELECT RAISE(ABORT, 'dsvault: listings can only be added to a pending dataset'); END;

CREATE TRIGGER listings_no_update BEFORE UPDATE ON listings
BEGIN SELECT RAISE(ABORT, 'dsvault: listings are immutable'); END;

CREATE TRIGGER listings_sealed_no_delete BEFORE DELETE ON listings
WHEN (SELECT state FROM datasets WHERE id = OLD.dataset_id) = 'sealed' AND NOT EXISTS (
    SELECT 1 FROM removals r WHERE r.dataset_id = OLD.dataset_id AND r.done = 0)
BEGIN SELECT RAISE(ABORT, 'dsvault: sealed datasets are immutable'); END;
