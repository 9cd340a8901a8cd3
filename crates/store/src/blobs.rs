//! Content-addressed blob files: `blobs/<first two hex digits>/<sha-256>`.
//!
//! A blob file is written to `tmp/`, fsynced, renamed into place and its
//! directory fsynced before any row may reference it, so a committed
//! reference always points at durable bytes. Files are immutable once named.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use bulwark_core::BlobId;
use sha2::{Digest, Sha256};

/// The SHA-256 content address of `bytes`.
pub fn blob_id(bytes: &[u8]) -> BlobId {
    BlobId(Sha256::digest(bytes).into())
}

pub struct BlobDir {
    root: PathBuf,
    tmp: PathBuf,
}

impl BlobDir {
    /// Opens (creating if needed) the blob directory under `data_dir`.
    pub fn open(data_dir: &Path) -> io::Result<BlobDir> {
        let root = data_dir.join("blobs");
        let tmp = data_dir.join("blobs-tmp");
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(&root)?;
        // All fan-out directories exist up front, so writing a blob never
        // creates a directory whose own entry would need another fsync.
        let mut created = false;
        for byte in 0..=255u8 {
            let dir = root.join(format!("{byte:02x}"));
            if !dir.exists() {
                fs::create_dir(&dir)?;
                created = true;
            }
        }
        if created {
            File::open(&root)?.sync_all()?;
            File::open(data_dir)?.sync_all()?;
        }
        Ok(BlobDir { root, tmp })
    }

    pub fn path(&self, id: &BlobId) -> PathBuf {
        let hex = id.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    pub fn exists(&self, id: &BlobId) -> bool {
        self.path(id).is_file()
    }

    /// Makes the blob durable. Skips the write when the file is already
    /// there, unless `force` (used after a racing delete removed it).
    pub fn write(&self, id: &BlobId, bytes: &[u8], force: bool) -> io::Result<()> {
        let path = self.path(id);
        if !force && path.is_file() {
            return Ok(());
        }
        let mut nonce = [0u8; 8];
        getrandom::getrandom(&mut nonce).map_err(io::Error::other)?;
        let tmp = self
            .tmp
            .join(format!("{}-{}", id.to_hex(), u64::from_le_bytes(nonce)));
        let result = (|| {
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)?;
            let dir = path
                .parent()
                .ok_or_else(|| io::Error::other("blob path has no parent"))?;
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    pub fn read(&self, id: &BlobId) -> io::Result<Vec<u8>> {
        fs::read(self.path(id))
    }

    pub fn remove(&self, id: &BlobId) -> io::Result<()> {
        match fs::remove_file(self.path(id)) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// Every blob file with its modification time.
    pub fn list(&self) -> io::Result<Vec<(BlobId, SystemTime)>> {
        let mut out = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let Some(id) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<BlobId>().ok())
                else {
                    continue;
                };
                out.push((id, entry.metadata()?.modified()?));
            }
        }
        Ok(out)
    }

    /// Removes temporary files left by writes that crashed midway.
    pub fn clean_tmp(&self, min_age: Duration) -> io::Result<()> {
        let now = SystemTime::now();
        for entry in fs::read_dir(&self.tmp)? {
            let entry = entry?;
            let old = entry
                .metadata()?
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .is_some_and(|age| age >= min_age);
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
        Ok(())
    }
}
