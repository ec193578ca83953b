//! One HNSW graph (usearch, cosine) per kind of vector: images, objects, faces, holding its
//! vectors in the store's [`VectorEncoding`].
//!
//! Keys: an image's vector is keyed by its slot; object and face vectors by
//! `slot << 16 | index`, so a key alone names the image and the part.
//!
//! A saved graph is usearch's file followed by a trailer: the generation of the records
//! database it was built from (u64, little-endian), the encoding (u64) and
//! [`TRAILER_MAGIC`]. usearch reads its file as a stream of the length its header gives, so
//! the trailer is never read by it; a graph whose trailer is missing, names another
//! generation or another encoding is refused at load.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use usearch::{Index, IndexOptions, MetricKind, ScalarKind};

use crate::validate::{cosine, MAX_PARTS_PER_IMAGE};
use crate::StoreError;

/// How a graph holds its vectors. The records keep every vector as f32 whatever the
/// encoding; with a compact encoding the graph ranks candidates approximately and the store
/// rescores them with the stored f32 vectors, so reported scores stay true cosine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VectorEncoding {
    /// 4 bytes per dimension: the graph's own scores are exact.
    F32,
    /// 2 bytes per dimension (half precision).
    F16,
    /// 1 byte per dimension (usearch scales each component by 127): the default, a quarter
    /// of f32's memory for a million images' worth of object vectors.
    #[default]
    I8,
}

impl VectorEncoding {
    fn scalar_kind(self) -> ScalarKind {
        match self {
            VectorEncoding::F32 => ScalarKind::F32,
            VectorEncoding::F16 => ScalarKind::F16,
            VectorEncoding::I8 => ScalarKind::I8,
        }
    }

    /// The number written into a saved graph's trailer.
    fn code(self) -> u64 {
        match self {
            VectorEncoding::F32 => 32,
            VectorEncoding::F16 => 16,
            VectorEncoding::I8 => 8,
        }
    }

    /// Whether the graph's scores equal cosine over the stored f32 vectors.
    pub fn is_exact(self) -> bool {
        self == VectorEncoding::F32
    }
}

/// HNSW build and search parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HnswParams {
    /// Graph degree (M).
    pub connectivity: usize,
    /// Candidate list size while inserting (efConstruction).
    pub expansion_add: usize,
    /// Smallest candidate list size while searching (ef); a query asking for more
    /// results widens it to that many.
    pub expansion_search: usize,
}

impl Default for HnswParams {
    fn default() -> Self {
        // expansion_add 64 rather than usearch's 128: inserts twice as fast, and candidates
        // are rescored exactly, so the small loss in graph quality costs no recall.
        HnswParams { connectivity: 32, expansion_add: 64, expansion_search: 128 }
    }
}

pub const PART_BITS: u32 = MAX_PARTS_PER_IMAGE.trailing_zeros();

/// Last bytes of a saved graph, after the generation.
const TRAILER_MAGIC: [u8; 8] = *b"vsgraph2";
const TRAILER_LEN: u64 = 24;

pub fn part_key(slot: u64, index: usize) -> u64 {
    (slot << PART_BITS) | index as u64
}

pub fn split_part_key(key: u64) -> (u64, usize) {
    (key >> PART_BITS, (key & (MAX_PARTS_PER_IMAGE as u64 - 1)) as usize)
}

pub struct VectorIndex {
    index: Index,
    dimension: usize,
    encoding: VectorEncoding,
    /// Most vectors held at once since the graph was built or loaded: the nodes it has
    /// used. Nodes beyond the vectors held now belong to removed vectors until an add takes
    /// them (usearch reuses them); [`VectorIndex::removed`].
    nodes: AtomicUsize,
}

fn index_error(context: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("vector index: {context}: {error}"))
}

impl VectorIndex {
    pub fn new(dimension: usize, params: HnswParams, encoding: VectorEncoding) -> Result<Self, StoreError> {
        let options = IndexOptions {
            dimensions: dimension,
            metric: MetricKind::Cos,
            quantization: encoding.scalar_kind(),
            connectivity: params.connectivity,
            expansion_add: params.expansion_add,
            expansion_search: params.expansion_search,
            multi: false,
        };
        let index = Index::new(&options).map_err(|e| index_error("create", e))?;
        Ok(VectorIndex { index, dimension, encoding, nodes: AtomicUsize::new(0) })
    }

    /// Loads a saved graph; fails if it was built from records of another `generation`, in
    /// another encoding or for another dimension.
    pub fn load(
        path: &Path,
        dimension: usize,
        params: HnswParams,
        encoding: VectorEncoding,
        generation: u64,
    ) -> Result<Self, StoreError> {
        let context = format!("load {}", path.display());
        let (saved_generation, saved_encoding) = read_trailer(path)?;
        if saved_generation != generation {
            return Err(index_error(
                &context,
                format!(
                    "built from records generation {saved_generation:016x}, the records are generation {generation:016x}"
                ),
            ));
        }
        if saved_encoding != encoding.code() {
            return Err(index_error(
                &context,
                format!("saved with encoding code {saved_encoding}, configured {encoding:?}"),
            ));
        }
        let loaded = Self::new(dimension, params, encoding)?;
        loaded.index.load(&path.to_string_lossy()).map_err(|e| index_error(&format!("load {}", path.display()), e))?;
        if loaded.index.dimensions() != dimension {
            return Err(index_error("load", format!("saved graph has dimension {}", loaded.index.dimensions())));
        }
        loaded.index.change_expansion_search(params.expansion_search);
        loaded.nodes.store(loaded.len(), Ordering::Relaxed);
        Ok(loaded)
    }

    /// Writes the graph and the trailer naming `generation` and the encoding to `path`, and
    /// fsyncs it.
    pub fn save(&self, path: &Path, generation: u64) -> Result<(), StoreError> {
        self.index.save(&path.to_string_lossy()).map_err(|e| index_error(&format!("save {}", path.display()), e))?;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| index_error(&format!("open {}", path.display()), e))?;
        file.write_all(&generation.to_le_bytes())
            .and_then(|()| file.write_all(&self.encoding.code().to_le_bytes()))
            .and_then(|()| file.write_all(&TRAILER_MAGIC))
            .and_then(|()| file.sync_all())
            .map_err(|e| index_error(&format!("write the trailer of {}", path.display()), e))
    }

    pub fn len(&self) -> usize {
        self.index.size()
    }

    /// Vectors the graph has room for without growing.
    pub fn capacity(&self) -> usize {
        self.index.capacity()
    }

    /// Bytes usearch holds for the graph (vectors, links, reserved room).
    pub fn memory_bytes(&self) -> usize {
        self.index.memory_usage()
    }

    /// Makes room for `additional` more vectors, doubling so that growth is amortised.
    pub fn reserve(&self, additional: usize) -> Result<(), StoreError> {
        let needed = self.index.size() + additional;
        if needed > self.index.capacity() {
            let capacity = needed.max(self.index.capacity() * 2).max(1024);
            let threads = std::thread::available_parallelism().map_or(4, |n| n.get()).max(4);
            self.index.reserve_capacity_and_threads(capacity, threads).map_err(|e| index_error("reserve", e))?;
        }
        Ok(())
    }

    /// Adds a vector; the caller has reserved room. A key already present is left as is,
    /// so replaying a record onto a loaded snapshot is harmless.
    pub fn add(&self, key: u64, vector: &[f32]) -> Result<(), StoreError> {
        if self.index.contains(key) {
            return Ok(());
        }
        self.index.add(key, vector).map_err(|e| index_error("add", e))?;
        self.nodes.fetch_max(self.len(), Ordering::Relaxed);
        Ok(())
    }

    /// Nodes of removed vectors that no add has taken again: searches still walk them and
    /// they hold memory, until the graph is compacted.
    pub fn removed(&self) -> usize {
        self.nodes.load(Ordering::Relaxed).saturating_sub(self.len())
    }

    pub fn contains(&self, key: u64) -> bool {
        self.index.contains(key)
    }

    pub fn remove(&self, key: u64) -> Result<(), StoreError> {
        self.index.remove(key).map(drop).map_err(|e| index_error("remove", e))
    }

    /// Copies the graph's vector of `key` into `buffer` (decoded from the graph's encoding,
    /// so exact only for f32); false when absent.
    pub fn vector(&self, key: u64, buffer: &mut [f32]) -> bool {
        matches!(self.index.get(key, buffer), Ok(n) if n > 0)
    }

    /// A scorer of this graph's stored vectors against `query`, for exact scans over a
    /// filter's candidates.
    pub fn scorer<'a>(&'a self, query: &'a [f32]) -> Scorer<'a> {
        let quantized = match self.encoding {
            VectorEncoding::I8 => quantize(query),
            VectorEncoding::F32 | VectorEncoding::F16 => Vec::new(),
        };
        Scorer {
            index: self,
            query,
            quantized,
            f32_buffer: vec![0.0; self.dimension],
            i8_buffer: vec![0; self.dimension],
        }
    }

    /// Approximate nearest neighbours as (key, cosine), best first. `count` results are
    /// asked for, which also sets the candidate list to at least `count`; `keep` is tested
    /// inside the graph search, so non-matching vectors never take a result's place.
    pub fn search(
        &self,
        query: &[f32],
        count: usize,
        keep: Option<&dyn Fn(u64) -> bool>,
    ) -> Result<Vec<(u64, f32)>, StoreError> {
        let matches = match keep {
            None => self.index.search(query, count),
            Some(keep) => self.index.filtered_search(query, count, keep),
        }
        .map_err(|e| index_error("search", e))?;
        Ok(matches
            .keys
            .into_iter()
            .zip(matches.distances)
            .map(|(key, distance)| (key, (1.0 - distance).clamp(-1.0, 1.0)))
            .collect())
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn encoding(&self) -> VectorEncoding {
        self.encoding
    }
}

/// Cosine of one query with stored vectors, in the graph's encoding: exact for f32; for i8
/// an integer dot product of the stored bytes with the query quantized the same way (no
/// conversion of the stored vector to f32, which made a scan of tens of thousands of
/// candidates cost about a microsecond each); for f16 decoded to f32. Compact encodings'
/// scores are approximate, for the store to rescore.
pub struct Scorer<'a> {
    index: &'a VectorIndex,
    query: &'a [f32],
    /// The query scaled so that its largest component is 127 (cosine ignores the scale),
    /// empty unless the graph is i8.
    quantized: Vec<i8>,
    f32_buffer: Vec<f32>,
    i8_buffer: Vec<i8>,
}

impl Scorer<'_> {
    /// The score of the vector stored under `key`; `None` when the graph lacks it.
    pub fn score(&mut self, key: u64) -> Option<f32> {
        match self.index.encoding {
            VectorEncoding::I8 => {
                let read = self.index.index.get(key, &mut self.i8_buffer).ok()?;
                (read > 0).then(|| i8_cosine(&self.quantized, &self.i8_buffer))
            }
            VectorEncoding::F32 | VectorEncoding::F16 => {
                self.index.vector(key, &mut self.f32_buffer).then(|| cosine(self.query, &self.f32_buffer))
            }
        }
    }
}

/// `vector` scaled so that its largest magnitude is 127, rounded.
fn quantize(vector: &[f32]) -> Vec<i8> {
    let largest = vector.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if largest > 0.0 { 127.0 / largest } else { 0.0 };
    vector.iter().map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8).collect()
}

/// Cosine of two i8 vectors; 0 when either is all zero. Sums stay within i32: 512 products
/// of at most 127 * 127.
fn i8_cosine(a: &[i8], b: &[i8]) -> f32 {
    let (mut dot, mut norm_a, mut norm_b) = (0i32, 0i32, 0i32);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (i32::from(x), i32::from(y));
        dot += x * y;
        norm_a += x * x;
        norm_b += y * y;
    }
    if norm_a == 0 || norm_b == 0 {
        return 0.0;
    }
    (dot as f64 / ((norm_a as f64) * (norm_b as f64)).sqrt()) as f32
}

/// The generation and encoding code in a saved graph's trailer.
fn read_trailer(path: &Path) -> Result<(u64, u64), StoreError> {
    let context = format!("load {}", path.display());
    let mut file = std::fs::File::open(path).map_err(|e| index_error(&context, e))?;
    let length = file.metadata().map_err(|e| index_error(&context, e))?.len();
    if length < TRAILER_LEN {
        return Err(index_error(&context, format!("{length} bytes: too short for a saved graph")));
    }
    let mut trailer = [0u8; TRAILER_LEN as usize];
    file.seek(SeekFrom::Start(length - TRAILER_LEN))
        .and_then(|_| file.read_exact(&mut trailer))
        .map_err(|e| index_error(&context, e))?;
    let word = |i: usize| u64::from_le_bytes(trailer[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    if trailer[16..] != TRAILER_MAGIC {
        return Err(index_error(&context, "no generation trailer (saved by an older build, or damaged)"));
    }
    Ok((word(0), word(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i8_scores_follow_f32_cosine() {
        let index = VectorIndex::new(64, HnswParams::default(), VectorEncoding::I8).unwrap();
        index.reserve(50).unwrap();
        let vector = |seed: u64| -> Vec<f32> {
            (0..64).map(|i| (((seed * 7919 + i * 104_729) % 2003) as f32 / 1001.0) - 1.0).collect()
        };
        for key in 0..50 {
            index.add(key, &vector(key)).unwrap();
        }
        let query = vector(1000);
        let mut scorer = index.scorer(&query);
        for key in 0..50 {
            let exact = cosine(&query, &vector(key));
            let approximate = scorer.score(key).unwrap();
            assert!((exact - approximate).abs() < 0.02, "key {key}: i8 {approximate} against f32 {exact}");
        }
        assert_eq!(scorer.score(50), None, "a key the graph lacks has no score");
    }

    #[test]
    fn i8_cosine_of_zero_and_opposite_vectors() {
        assert_eq!(i8_cosine(&[0, 0], &[3, 4]), 0.0);
        assert_eq!(i8_cosine(&[127, 0], &[-5, 0]), -1.0);
        assert_eq!(quantize(&[0.5, -0.25]), vec![127, -64]);
    }

    #[test]
    fn part_keys_round_trip() {
        assert_eq!(split_part_key(part_key(123_456, 65_535)), (123_456, 65_535));
        assert_eq!(split_part_key(part_key(0, 0)), (0, 0));
    }
}
