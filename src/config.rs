//! `vault.toml`: the settings a vault was created with and must keep.
//!
//! Owns: the format version, the store URL, the chunking parameters (part of the on-disk
//! format: changing them changes every chunk boundary, so they are pinned per vault together
//! with the chunker crate's version) and the compression policy.
//! Never: holds credentials; those come from the environment only.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Vault format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;

/// Settings of one vault, stored as `vault.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VaultConfig {
    pub format: u32,
    /// Where packs, manifests and refs live: `file://...` (default: `<vault>/store`).
    pub store: String,
    pub chunking: ChunkingConfig,
    pub compression: CompressionConfig,
    pub packs: PackConfig,
    /// How a remote (object store) store is used; ignored for `file://` stores. Absent in
    /// vaults made before remote stores existed, hence the default.
    #[serde(default)]
    pub remote: RemoteConfig,
    /// Set by `init --shared GROUP`: every member of the group may write the vault, and
    /// what writers create is made group-readable whatever their umask (docs/sharing.md).
    /// Absent for a private vault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharedConfig>,
}

/// The group a shared vault belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedConfig {
    /// The group's name when the vault was made (for people reading the file).
    pub group: String,
    /// The group's id: what the folders' group and every check use.
    pub gid: u32,
}

/// FastCDC parameters; part of the on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkingConfig {
    /// Always "fastcdc-v2020".
    pub algorithm: ChunkAlgorithm,
    /// Major version of the `fastcdc` crate whose cut points this vault uses.
    pub crate_major: u32,
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkAlgorithm {
    #[serde(rename = "fastcdc-v2020")]
    FastCdc2020,
}

/// When a chunk is stored zstd-compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionConfig {
    /// zstd level for chunks that compress: 1–19, or negative for zstd's faster modes; 0 stores
    /// every chunk raw.
    pub zstd_level: i32,
    /// A chunk is stored compressed only if that saves at least this percentage.
    pub min_saving_percent: u32,
}

/// Pack sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackConfig {
    /// A pack is sealed once it holds at least this many bytes.
    pub target_size: u64,
}

/// Tunables of a remote store (never credentials: those come from the environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RemoteConfig {
    /// Packs uploading at once while chunking goes on.
    pub uploads_in_flight: usize,
    /// Packs larger than this are uploaded in parts (multipart upload).
    pub multipart_threshold: u64,
    /// Size of one part of a multipart upload (S3 needs at least 5 MiB).
    pub part_size: u64,
    /// Percentage of uploaded packs read back in full and re-hashed before the dataset is
    /// sealed (every upload's size is checked regardless); 100 checks all.
    pub verify_read_back_percent: u32,
    /// Reads fetch and cache exactly the chunks they need; a prefetch (sequential readers)
    /// fetches neighbouring chunks of a pack together, in GETs of at most this many bytes.
    pub max_get_size: u64,
    /// One HTTP request may take this long.
    pub request_timeout_secs: u64,
    /// Retries of a failing request (with exponential backoff) stop after this many seconds
    /// or `max_retries`, whichever comes first; then the operation fails.
    pub retry_timeout_secs: u64,
    pub max_retries: usize,
    /// How long a writer's lease on a shared store lasts (docs/ARCHITECTURE.md, "gc on a
    /// shared bucket"): longer than any upload. A writer whose ref would land later stops.
    pub lease_ttl_secs: u64,
}

impl Default for RemoteConfig {
    fn default() -> Self {
        RemoteConfig {
            uploads_in_flight: 4,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            verify_read_back_percent: 10,
            max_get_size: 4 << 20,
            request_timeout_secs: 30,
            retry_timeout_secs: 60,
            max_retries: 5,
            lease_ttl_secs: 6 * 60 * 60,
        }
    }
}

impl Default for ChunkingConfig {
    /// 512 KiB average: an edit costs a chunk or two (v2 of the bench data stores 0.93x the
    /// ideal new bytes) while a terabyte needs ~2M chunk rows. See docs/FORMAT.md.
    fn default() -> Self {
        ChunkingConfig {
            algorithm: ChunkAlgorithm::FastCdc2020,
            crate_major: 5,
            min_size: 128 * 1024,
            avg_size: 512 * 1024,
            max_size: 2 * 1024 * 1024,
        }
    }
}

impl Default for VaultConfig {
    fn default() -> Self {
        VaultConfig {
            format: FORMAT_VERSION,
            store: "file://store".to_string(),
            chunking: ChunkingConfig::default(),
            compression: CompressionConfig {
                zstd_level: 1,
                min_saving_percent: 10,
            },
            packs: PackConfig {
                target_size: 32 * 1024 * 1024,
            },
            remote: RemoteConfig::default(),
            shared: None,
        }
    }
}

impl VaultConfig {
    /// Read and check `vault.toml`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io_at("reading", path))?;
        let config: VaultConfig =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        if config.format > FORMAT_VERSION {
            return Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                found: config.format,
                supported: FORMAT_VERSION,
            });
        }
        config
            .chunking
            .validate()
            .and_then(|_| config.remote.validate())
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// Serialise for writing.
    pub fn to_toml(&self) -> String {
        let body = toml::to_string_pretty(self).expect("config serialises");
        format!("# dsvault vault settings. The chunking section is part of the on-disk format: never edit it.\n{body}")
    }
}

impl ChunkingConfig {
    /// Check the parameters against what the chunker accepts.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let (min, avg, max) = (self.min_size, self.avg_size, self.max_size);
        if self.crate_major != 5 {
            return Err(format!(
                "chunker crate major {} is not supported (this build uses 5)",
                self.crate_major
            ));
        }
        if !(64..=1 << 20).contains(&min) || !(256..=1 << 22).contains(&avg) || !(1024..=1 << 24).contains(&max) {
            return Err("chunk sizes out of range".into());
        }
        if min % 2 != 0 || avg % 2 != 0 || max % 2 != 0 || !(min < avg && avg < max) {
            return Err("chunk sizes must be even and min < avg < max".into());
        }
        Ok(())
    }
}

impl RemoteConfig {
    /// Check the values make sense.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.uploads_in_flight == 0 || self.uploads_in_flight > 64 {
            return Err("remote.uploads_in_flight must be 1 to 64".into());
        }
        if self.part_size < 5 << 20 || self.multipart_threshold < self.part_size {
            return Err("remote.part_size must be at least 5 MiB and at most remote.multipart_threshold".into());
        }
        if self.verify_read_back_percent > 100 {
            return Err("remote.verify_read_back_percent must be 0 to 100".into());
        }
        if !(64 << 10..=256 << 20).contains(&self.max_get_size) {
            return Err("remote.max_get_size must be 64 KiB to 256 MiB".into());
        }
        if self.request_timeout_secs == 0 || self.retry_timeout_secs == 0 {
            return Err("remote timeouts must be at least one second".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_round_trips_through_toml() {
        let mut config = VaultConfig::default();
        let parsed: VaultConfig = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(config, parsed);
        config.chunking.validate().unwrap();
        assert!(!config.to_toml().contains("shared"));
        config.shared = Some(SharedConfig {
            group: "ml".into(),
            gid: 1234,
        });
        let parsed: VaultConfig = toml::from_str(&config.to_toml()).unwrap();
        assert_eq!(config, parsed);
    }
}
