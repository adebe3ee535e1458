//! Media files, content-addressed by sha256 under the state directory (`media/ab/abcd…`), never in
//! SQLite: the database stays small and the same photo sent twice is kept once.

use crate::pipeline::Blob;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct MediaStore {
    dir: PathBuf,
}

impl MediaStore {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(&sha256[..2.min(sha256.len())]).join(sha256)
    }

    /// Writes a blob durably (temp file, fsync, rename, fsync folder) unless it is already there.
    /// Runs before the report naming it is committed, so a committed report never points at a
    /// missing file; a crash in between leaves at most an unreferenced file.
    pub fn put(&self, blob: &Blob) -> std::io::Result<()> {
        let path = self.path(&blob.sha256);
        let parent = path.parent().unwrap_or(&self.dir);
        if path.exists() {
            // Another writer's rename may not be durable yet (it may be between its rename and its
            // folder fsync, or have crashed there): make it durable before we reference it.
            return sync_dir(parent);
        }
        if !parent.is_dir() {
            crate::store::create_private_dir(parent)?;
            sync_dir(&self.dir)?;
        }
        let tmp_dir = self.dir.join(".tmp");
        crate::store::create_private_dir(&tmp_dir)?;
        let tmp = tmp_dir.join(format!("{}.{}", blob.sha256, ulid::Ulid::new()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&blob.bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(parent)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// A downloaded file kept as media: type sniffed from the bytes (else the server's), written
/// durably, hashed for photo matching, and a photo's EXIF position read, all off the async
/// threads.
pub async fn keep(
    store: std::sync::Arc<MediaStore>,
    bytes: Vec<u8>,
    declared: Option<String>,
    name: Option<String>,
    tz: chrono_tz::Tz,
) -> std::io::Result<(
    crate::report::Media,
    Option<crate::pipeline::place::PhotoPlace>,
)> {
    tokio::task::spawn_blocking(move || {
        let content_type = infer::get(&bytes)
            .map(|t| t.mime_type().to_string())
            .or(declared)
            .unwrap_or_else(|| "application/octet-stream".into());
        let blob = Blob {
            sha256: crate::pipeline::sha256_hex(&bytes),
            bytes,
        };
        store.put(&blob)?;
        let image = content_type.starts_with("image/");
        let place = image
            .then(|| crate::pipeline::place::photo_place(&blob.bytes, tz))
            .flatten();
        let media = crate::report::Media {
            phash: image
                .then(|| crate::pipeline::photo::phash(&blob.bytes))
                .flatten(),
            sha256: blob.sha256,
            content_type,
            size: blob.bytes.len() as u64,
            name,
        };
        Ok((media, place))
    })
    .await
    .map_err(std::io::Error::other)?
}

/// fsync a folder so a rename into it survives power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
