//! Uploaded photos on disk, content-addressed: `<dir>/<id[0..2]>/<id>` where the id is
//! the hex SHA-256 of the bytes. A file is written to a temporary name, synced and
//! renamed, so a crash never leaves a partial photo under its final name.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

/// Hex SHA-256 of the bytes: the image id.
pub fn content_id(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// 64 lowercase hex digits; anything else never names a stored photo (and never
/// reaches the file system as a path).
pub fn is_valid_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The MIME type of a stored photo, from its first bytes.
pub fn sniff_content_type(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        "image/jpeg"
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        "image/webp"
    } else {
        "application/octet-stream"
    }
}

#[derive(Clone, Debug)]
pub struct BlobStore {
    dir: PathBuf,
}

impl BlobStore {
    pub fn open(dir: impl Into<PathBuf>) -> std::io::Result<BlobStore> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(BlobStore { dir })
    }

    fn path(&self, id: &str) -> PathBuf {
        debug_assert!(is_valid_id(id));
        self.dir.join(&id[..2]).join(id)
    }

    /// Stores the bytes under their id; a photo already there is left as it is.
    pub async fn put(&self, id: &str, bytes: bytes::Bytes) -> std::io::Result<()> {
        let path = self.path(id);
        tokio::task::spawn_blocking(move || write_durably(&path, &bytes)).await.map_err(std::io::Error::other)?
    }

    /// `None` when no photo is stored under the id.
    pub async fn get(&self, id: &str) -> std::io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.path(id)).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    pub async fn delete(&self, id: &str) -> std::io::Result<()> {
        match tokio::fs::remove_file(self.path(id)).await {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }
}

/// Tells apart the temporary files of concurrent writes in one process.
static NEXT_TMP: AtomicU64 = AtomicU64::new(0);

fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if path.exists() {
        return Ok(());
    }
    let dir = path.parent().expect("blob paths have a parent");
    std::fs::create_dir_all(dir)?;
    // A name of this write's own: concurrent uploads of the same photo must not truncate or
    // rename each other's temporary file. Each renames its own complete copy into place.
    let tmp = dir.join(format!(
        ".{}.tmp.{}.{}",
        path.file_name().unwrap().to_string_lossy(),
        std::process::id(),
        NEXT_TMP.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err);
    }
    // The rename itself must survive a crash too.
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_hex_sha256() {
        let id = content_id(b"abc");
        assert_eq!(id, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert!(is_valid_id(&id));
        assert!(!is_valid_id("../etc/passwd"));
        assert!(!is_valid_id(&id.to_uppercase()));
    }

    #[test]
    fn sniffs_the_formats_preprocess_accepts() {
        assert_eq!(sniff_content_type(&[0xFF, 0xD8, 0xFF, 0xE0]), "image/jpeg");
        assert_eq!(sniff_content_type(b"\x89PNG\r\n\x1a\n...."), "image/png");
        assert_eq!(sniff_content_type(b"RIFF\0\0\0\0WEBPVP8 "), "image/webp");
        assert_eq!(sniff_content_type(b"hello"), "application/octet-stream");
    }

    #[tokio::test]
    async fn put_get_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let id = content_id(b"photo");
        blobs.put(&id, bytes::Bytes::from_static(b"photo")).await.unwrap();
        blobs.put(&id, bytes::Bytes::from_static(b"photo")).await.unwrap();
        assert_eq!(blobs.get(&id).await.unwrap().as_deref(), Some(&b"photo"[..]));
        blobs.delete(&id).await.unwrap();
        assert_eq!(blobs.get(&id).await.unwrap(), None);
        blobs.delete(&id).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_puts_of_one_photo_all_succeed_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = BlobStore::open(dir.path()).unwrap();
        let bytes = bytes::Bytes::from(vec![7u8; 1 << 20]);
        let id = content_id(&bytes);
        for _ in 0..20 {
            let puts: Vec<_> = (0..16)
                .map(|_| {
                    let (blobs, id, bytes) = (blobs.clone(), id.clone(), bytes.clone());
                    tokio::spawn(async move { blobs.put(&id, bytes).await })
                })
                .collect();
            for put in puts {
                put.await.unwrap().unwrap();
            }
            assert_eq!(blobs.get(&id).await.unwrap().as_deref(), Some(&bytes[..]));
            let names: Vec<_> = std::fs::read_dir(dir.path().join(&id[..2]))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            assert_eq!(names, vec![id.clone()], "only the photo, no temporary file");
            blobs.delete(&id).await.unwrap();
        }
    }
}
