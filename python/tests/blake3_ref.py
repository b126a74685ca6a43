"""The content hash the catalog recorded for a file, read with the `dsvault` command
(`show --json` does not list files, so the mount's xattr is not needed: `export` then
hash would need blake3 in Python; instead read it from catalog.db with sqlite3)."""

import sqlite3
from pathlib import Path


def content_hash(vault: Path, path: str) -> str:
    parent, _, name = path.rpartition("/")
    db = sqlite3.connect(f"file:{vault / 'catalog.db'}?mode=ro", uri=True)
    try:
        row = db.execute(
            "SELECT c.hash FROM entries e JOIN contents c ON c.id = e.content_id WHERE e.parent = ? AND e.name = ?",
            (parent.encode(), name.encode()),
        ).fetchone()
    finally:
        db.close()
    return bytes(row[0]).hex()
