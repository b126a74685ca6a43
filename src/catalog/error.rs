//! SQLite's errors turned into the library's: `rusqlite` stays inside `catalog`.
//!
//! Owns: the one conversion from a SQLite error into [`Error`]: a full disk becomes
//! `Error::NoSpace`, the rest `Error::Catalog` with the kind callers branch on
//! ([`CatalogErrorKind`]: a constraint refused a write, the database stayed busy).
//! Never: exposes a `rusqlite` type, so a SQLite upgrade never changes the library's API.

use std::path::PathBuf;

use rusqlite::ErrorCode;

use crate::error::{CatalogError, CatalogErrorKind, Error};

impl From<rusqlite::Error> for Error {
    /// A full disk under the catalog gets the same actionable message as a full disk anywhere.
    fn from(e: rusqlite::Error) -> Self {
        let code = match &e {
            rusqlite::Error::SqliteFailure(f, _) => Some(f.code),
            _ => None,
        };
        let kind = match code {
            Some(ErrorCode::DiskFull) => {
                return Error::NoSpace {
                    path: PathBuf::from("the catalog (catalog.db)"),
                }
            }
            Some(ErrorCode::ConstraintViolation) => CatalogErrorKind::Constraint,
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => CatalogErrorKind::Busy,
            _ => CatalogErrorKind::Other,
        };
        Error::Catalog(CatalogError::new(kind, Box::new(e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_failures_keep_what_callers_branch_on() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x UNIQUE); INSERT INTO t VALUES (1);")
            .unwrap();
        let err: Error = conn.execute("INSERT INTO t VALUES (1)", []).unwrap_err().into();
        assert!(err.is_constraint_violation(), "{err:?}");
        assert!(
            err.to_string().starts_with("catalog: UNIQUE constraint failed"),
            "{err}"
        );
        let err: Error = conn.execute("SELECT nope", []).unwrap_err().into();
        assert!(!err.is_constraint_violation());
        assert!(matches!(err, Error::Catalog(ref c) if c.kind() == CatalogErrorKind::Other));
    }
}
