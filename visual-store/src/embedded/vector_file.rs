//! The f32 vectors of every record, in one append-only file beside the records
//! (`vectors.f32`): a 32-byte header (magic, the records database's generation, the
//! dimension), then vectors of `dimension` little-endian f32 each, one after the other. A
//! record holds the index of its first vector; its vectors (image, objects, faces) follow.
//!
//! Why a file and not redb values: a record's vectors are ~13 KB at 512-d, and redb packs
//! such values into power-of-two pages at about 36 KB a record (measured, 30,000 filled
//! images: 1.08 GB, unchanged by `compact`), 36 GB at a million images, more than the page
//! cache holds, so rescoring would read the disk. Packed here, a million images' vectors are
//! 13 GB, read with `pread` (no lock; concurrent with appends).
//!
//! Durability: a batch's vectors are appended and `fdatasync`ed before the records naming
//! them commit, so a committed record's vectors are on disk. A crash in between leaves
//! vectors no record names (and perhaps a torn last vector): they are dead space, and the
//! torn tail is overwritten by the next append. A deleted record's vectors stay as dead
//! space too (see docs/stores.md, Deletes).

use std::fs::{File, OpenOptions};
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::StoreError;

const MAGIC: [u8; 8] = *b"vsvecs01";
const HEADER_LEN: u64 = 32;

pub struct VectorFile {
    file: File,
    dimension: usize,
    /// Whole vectors in the file; the next append starts here. Only the store's writer
    /// appends.
    len: AtomicU64,
}

fn file_error<'a>(path: &'a Path, what: &'a str) -> impl Fn(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::Io(format!("vector file {}: {what}: {e}", path.display()))
}

impl VectorFile {
    /// Opens the file, creating it (header fsync'ed, and the folder) when missing or when
    /// a crash cut its header short (no record can name a vector of such a file). Refuses
    /// a file of another records database or dimension.
    pub fn open(path: &Path, dimension: usize, generation: u64) -> Result<Self, StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(file_error(path, "open"))?;
        let length = file.metadata().map_err(file_error(path, "stat"))?.len();
        if length < HEADER_LEN {
            let mut header = Vec::with_capacity(HEADER_LEN as usize);
            header.extend_from_slice(&MAGIC);
            header.extend_from_slice(&generation.to_le_bytes());
            header.extend_from_slice(&(dimension as u64).to_le_bytes());
            header.extend_from_slice(&0u64.to_le_bytes());
            file.set_len(0).map_err(file_error(path, "truncate"))?;
            file.write_all_at(&header, 0).map_err(file_error(path, "write the header"))?;
            file.sync_all().map_err(file_error(path, "fsync"))?;
            if let Some(folder) = path.parent() {
                File::open(folder).and_then(|dir| dir.sync_all()).map_err(file_error(path, "fsync the folder"))?;
            }
        } else {
            let mut header = [0u8; HEADER_LEN as usize];
            file.read_exact_at(&mut header, 0).map_err(file_error(path, "read the header"))?;
            let word = |i: usize| u64::from_le_bytes(header[8 * i..8 * i + 8].try_into().expect("8 bytes"));
            if header[..8] != MAGIC {
                return Err(StoreError::Io(format!("vector file {}: not a vector file", path.display())));
            }
            if word(1) != generation {
                return Err(StoreError::SchemaMismatch(format!(
                    "vector file {} belongs to records generation {:016x}, the records are generation {generation:016x}",
                    path.display(),
                    word(1)
                )));
            }
            if word(2) != dimension as u64 {
                return Err(StoreError::SchemaMismatch(format!(
                    "vector file {} holds {}-dimensional vectors, the store {dimension}",
                    path.display(),
                    word(2)
                )));
            }
        }
        let length = length.max(HEADER_LEN);
        let len = (length - HEADER_LEN) / (4 * dimension as u64);
        Ok(VectorFile { file, dimension, len: AtomicU64::new(len) })
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Vectors in the file: a record whose vectors reach past this was never completed.
    pub fn len(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    /// Appends `vectors` (each of the file's dimension) after the last whole vector and makes
    /// them durable; returns the index of the first. Only one caller at a time (the writer).
    pub fn append<'a>(&self, vectors: impl Iterator<Item = &'a [f32]>) -> Result<u64, StoreError> {
        let start = self.len();
        let mut bytes = Vec::new();
        let mut count = 0u64;
        for vector in vectors {
            assert_eq!(vector.len(), self.dimension, "vectors are checked before they are stored");
            bytes.extend(vector.iter().flat_map(|value| value.to_le_bytes()));
            count += 1;
        }
        let io = |what: &'static str| move |e| StoreError::Io(format!("vector file: {what}: {e}"));
        self.file.write_all_at(&bytes, self.offset(start)).map_err(io("append"))?;
        self.file.sync_data().map_err(io("fdatasync"))?;
        self.len.store(start + count, Ordering::Release);
        Ok(start)
    }

    /// `count` vectors from index `start`; an error when they reach past the file's end.
    pub fn read(&self, start: u64, count: usize) -> Result<Vec<Vec<f32>>, StoreError> {
        let end = start.checked_add(count as u64).filter(|end| *end <= self.len()).ok_or_else(|| {
            StoreError::Io(format!("vector file: vectors {start}..+{count} reach past its {} vectors", self.len()))
        })?;
        let mut bytes = vec![0u8; (end - start) as usize * 4 * self.dimension];
        self.file
            .read_exact_at(&mut bytes, self.offset(start))
            .map_err(|e| StoreError::Io(format!("vector file: read vectors {start}..{end}: {e}")))?;
        Ok(bytes
            .chunks_exact(4 * self.dimension)
            .map(|vector| vector.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
            .collect())
    }

    /// Asks the kernel to start reading the vectors at `indices` into the page cache, for a
    /// caller about to read them one by one: their disk reads then overlap instead of each
    /// waiting for the one before (a million images' vectors are 13 GB, more than this
    /// machine caches). Only a hint, so a failure is not an error: the reads still work.
    pub fn prefetch(&self, indices: impl Iterator<Item = u64>) {
        let length = NonZeroU64::new(4 * self.dimension as u64);
        for index in indices.filter(|index| *index < self.len()) {
            let _ = rustix::fs::fadvise(&self.file, self.offset(index), length, rustix::fs::Advice::WillNeed);
        }
    }

    fn offset(&self, index: u64) -> u64 {
        HEADER_LEN + index * 4 * self.dimension as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_read_back_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.f32");
        let file = VectorFile::open(&path, 3, 7).unwrap();
        assert_eq!(file.append([&[1.0, 2.0, 3.0][..], &[4.0, 5.0, 6.0]].into_iter()).unwrap(), 0);
        assert_eq!(file.append([&[7.0, 8.0, 9.0][..]].into_iter()).unwrap(), 2);
        assert_eq!(file.read(1, 2).unwrap(), vec![vec![4.0, 5.0, 6.0], vec![7.0, 8.0, 9.0]]);
        assert!(file.read(2, 2).is_err(), "past the end");
        drop(file);
        // A torn last vector (a crash inside an append) is not counted, and is overwritten.
        let raw = OpenOptions::new().append(true).open(&path).unwrap();
        raw.write_all_at(&[1, 2, 3, 4, 5], HEADER_LEN + 3 * 12).unwrap();
        let file = VectorFile::open(&path, 3, 7).unwrap();
        assert_eq!(file.len(), 3);
        assert_eq!(file.append([&[0.5, 0.5, 0.5][..]].into_iter()).unwrap(), 3);
        assert_eq!(file.read(0, 4).unwrap()[3], vec![0.5, 0.5, 0.5]);
        assert!(matches!(VectorFile::open(&path, 3, 8), Err(StoreError::SchemaMismatch(_))), "another generation");
        assert!(matches!(VectorFile::open(&path, 4, 7), Err(StoreError::SchemaMismatch(_))), "another dimension");
    }
}
