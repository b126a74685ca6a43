//! Dataset names: `KIND/NAME@VERSION`, and the rules for NAME and VERSION.
//!
//! Owns: parsing and validating dataset references. Names become path components in the
//! store (`refs/<kind>/<name>/<version>`) and in the mount, so they are restricted to a safe
//! alphabet: no `/`, `@`, `..`, NUL or control characters can ever reach a path.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Gold (ingested source) or derived (produced from a workspace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Gold,
    Derived,
}

impl Kind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Gold => "gold",
            Kind::Derived => "derived",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "gold" => Ok(Kind::Gold),
            "derived" => Ok(Kind::Derived),
            _ => Err(Error::InvalidName {
                what: "dataset kind",
                value: s.into(),
                reason: "expected gold or derived",
            }),
        }
    }
}

/// Check a dataset NAME or VERSION: 1–128 characters of `A-Z a-z 0-9 . _ + -`, starting
/// with a letter or digit, and never containing `..`.
pub fn validate_component(what: &'static str, value: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            what,
            value: value.to_string(),
            reason,
        })
    };
    if value.is_empty() || value.len() > 128 {
        return bad("must be 1 to 128 characters");
    }
    if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b)) {
        return bad("may only contain letters, digits and . _ + - (no /, @, spaces or control characters)");
    }
    if !value.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    if value.contains("..") {
        return bad("must not contain '..'");
    }
    Ok(())
}

/// A reference to a dataset as the user wrote it; the kind may be left out when the name is
/// unambiguous (the catalog resolves it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRef {
    pub kind: Option<Kind>,
    pub name: String,
    pub version: String,
}

/// A fully qualified dataset name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DatasetName {
    pub kind: Kind,
    pub name: String,
    pub version: String,
}

impl DatasetName {
    pub fn new(kind: Kind, name: &str, version: &str) -> Result<Self> {
        validate_component("dataset name", name)?;
        validate_component("version", version)?;
        Ok(DatasetName {
            kind,
            name: name.to_string(),
            version: version.to_string(),
        })
    }
}

impl fmt::Display for DatasetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.kind, self.name, self.version)
    }
}

impl FromStr for DatasetRef {
    type Err = Error;
    /// `gold/NAME@VERSION`, `derived/NAME@VERSION` or `NAME@VERSION`.
    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| Error::InvalidName {
            what: "dataset",
            value: s.to_string(),
            reason,
        };
        let (kind, rest) = match s.split_once('/') {
            Some((k, rest)) => (
                Some(
                    k.parse::<Kind>()
                        .map_err(|_| invalid("expected gold/NAME@VERSION, derived/NAME@VERSION or NAME@VERSION"))?,
                ),
                rest,
            ),
            None => (None, s),
        };
        let (name, version) = rest
            .split_once('@')
            .ok_or_else(|| invalid("expected NAME@VERSION (the version is required)"))?;
        validate_component("dataset name", name)?;
        validate_component("version", version)?;
        Ok(DatasetRef {
            kind,
            name: name.to_string(),
            version: version.to_string(),
        })
    }
}

impl fmt::Display for DatasetRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Some(k) => write!(f, "{k}/{}@{}", self.name, self.version),
            None => write!(f, "{}@{}", self.name, self.version),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms() {
        let r: DatasetRef = "gold/imagenet@v1".parse().unwrap();
        assert_eq!(
            (r.kind, r.name.as_str(), r.version.as_str()),
            (Some(Kind::Gold), "imagenet", "v1")
        );
        let r: DatasetRef = "clean@2024-01.rc1".parse().unwrap();
        assert_eq!(r.kind, None);
        assert!("derived/x@y".parse::<DatasetRef>().is_ok());
    }

    #[test]
    fn refuses_dangerous_names() {
        for bad in ["a/b", "a@b", "..", "a..b", "a\0b", "", ".hidden", "a b", "ä", "-x"] {
            assert!(validate_component("dataset name", bad).is_err(), "{bad:?} accepted");
        }
        for bad in [
            "imagenet",
            "silver/x@v1",
            "gold/x",
            "gold/x@",
            "gold/x@a/b",
            "gold/x@..",
        ] {
            assert!(bad.parse::<DatasetRef>().is_err(), "{bad:?} accepted");
        }
    }
}
