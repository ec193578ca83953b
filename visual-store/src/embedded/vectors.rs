//! One HNSW graph (usearch) per kind of vector: images, objects, faces, holding its vectors
//! in the store's [`VectorEncoding`] and ranking them by cosine (for i8, by the inner
//! product of vectors all of one length).
//!
//! Keys: an image's vector is keyed by its slot; object and face vectors by
//! `slot << 16 | index`, so a key alone names the image and the part.
//!
//! A graph may be split into shards, each its own usearch index and file, so that inserts
//! use more than one core (usearch cannot fill one index from several threads safely); a
//! key's shard follows from the key alone.
//!
//! A saved graph (shard) is usearch's file followed by a trailer: the generation of the records
//! database it was built from (u64, little-endian), the encoding (u64), the nodes used and
//! the nodes reused (u64 each; see [`Shard`]) and [`TRAILER_MAGIC`]. usearch reads its file
//! as a stream of the length its header gives, so the trailer is never read by it; a graph
//! whose trailer is missing, names another generation or another encoding is refused at
//! load. The trailer of earlier builds (`vsgraph2`: generation and encoding only) is read
//! with no node counts.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use numkong::Angular;
use rayon::prelude::*;
use usearch::{Index, IndexOptions, MetricKind, ScalarKind, VectorType};

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
    /// 1 byte per dimension: each vector scaled to length 127 and rounded, ranked by inner
    /// product. The default: a quarter of f32's memory for a million images' worth of
    /// object vectors, and the cheapest distance to insert with (docs/stores.md).
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

    /// i8 vectors all have length about [`I8_LENGTH`], so their inner product ranks as their
    /// cosine does, and the kernel skips the two norms that cosine computes at every
    /// distance: 1.2 times the insert rate at 200,000 images, the same recall (docs/stores.md).
    fn metric(self) -> MetricKind {
        match self {
            VectorEncoding::F32 | VectorEncoding::F16 => MetricKind::Cos,
            VectorEncoding::I8 => MetricKind::IP,
        }
    }

    /// The cosine a graph distance stands for: usearch's cosine distance is 1 - cosine, its
    /// inner-product distance 1 - the dot product of the two i8 vectors.
    fn cosine_of(self, distance: f32) -> f32 {
        let cosine = match self {
            VectorEncoding::F32 | VectorEncoding::F16 => 1.0 - distance,
            VectorEncoding::I8 => (1.0 - distance) / (I8_LENGTH * I8_LENGTH),
        };
        cosine.clamp(-1.0, 1.0)
    }

    /// The number written into a saved graph's trailer. 8 named the i8 graphs of earlier
    /// builds (usearch's own cast, which truncates, and cosine): they no longer load, and
    /// the open rebuilds them once.
    fn code(self) -> u64 {
        match self {
            VectorEncoding::F32 => 32,
            VectorEncoding::F16 => 16,
            VectorEncoding::I8 => 9,
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

/// The length of every vector an i8 graph holds: components within [-127, 127].
const I8_LENGTH: f32 = 127.0;

pub const PART_BITS: u32 = MAX_PARTS_PER_IMAGE.trailing_zeros();

/// Last bytes of a saved graph, after the generation, encoding and node counts.
const TRAILER_MAGIC: [u8; 8] = *b"vsgraph3";
const TRAILER_LEN: u64 = 40;
/// The trailer of earlier builds: generation, encoding, magic.
const TRAILER_V2_MAGIC: [u8; 8] = *b"vsgraph2";
const TRAILER_V2_LEN: u64 = 24;

pub fn part_key(slot: u64, index: usize) -> u64 {
    (slot << PART_BITS) | index as u64
}

pub fn split_part_key(key: u64) -> (u64, usize) {
    (key >> PART_BITS, (key & (MAX_PARTS_PER_IMAGE as u64 - 1)) as usize)
}

/// One graph of a kind, made of `shards` usearch indexes: a key lives in the shard
/// [`VectorIndex::shard_of`] names. Each shard is filled by one thread at a time (see
/// [`ShardAdds`]), so a graph of n shards can be filled on n cores.
pub struct VectorIndex {
    shards: Vec<Shard>,
    dimension: usize,
    encoding: VectorEncoding,
}

struct Shard {
    index: Index,
    encoding: VectorEncoding,
    /// Most vectors held at once since the shard was built: the nodes it has used. Nodes
    /// beyond the vectors held now belong to removed vectors until an add takes them
    /// (usearch reuses them); [`VectorIndex::removed`].
    nodes: AtomicUsize,
    /// Adds that took a removed vector's node since the shard was built. usearch relinks
    /// such a node from its new place but leaves the links other nodes had to it, which now
    /// lead to a vector elsewhere: searches find less the more nodes were reused
    /// ([`VectorIndex::reused`]; docs/stores.md).
    reused: AtomicUsize,
}

impl Shard {
    /// A key already present is left as is, so replaying a record onto a loaded snapshot is
    /// harmless.
    fn add(&self, key: u64, vector: &[f32]) -> Result<(), StoreError> {
        if self.index.contains(key) {
            return Ok(());
        }
        // One thread adds to a shard at a time (`ShardAdds`), so nothing changes in between.
        let takes_removed_node = self.index.size() < self.nodes.load(Ordering::Relaxed);
        match self.encoding {
            VectorEncoding::I8 => self.index.add(key, &to_i8(vector)),
            VectorEncoding::F32 | VectorEncoding::F16 => self.index.add(key, vector),
        }
        .map_err(|e| index_error("add", e))?;
        self.nodes.fetch_max(self.index.size(), Ordering::Relaxed);
        if takes_removed_node {
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// The shard's nearest `count` to `query`, given in the graph's scalar type or as f32.
    fn search<T: VectorType>(
        &self,
        query: &[T],
        count: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<usearch::ffi::Matches, StoreError> {
        match keep {
            None => self.index.search(query, count),
            Some(keep) => self.index.filtered_search(query, count, keep),
        }
        .map_err(|e| index_error("search", e))
    }
}

/// Vectors bound for one shard, added in order by whichever thread runs them: usearch
/// 2.26's concurrent `add` into one index can strand nodes that are stored but never
/// reached by a search, whatever the candidate list (unum-cloud/USearch#735, open), so no
/// shard is ever filled by two threads at once.
pub struct ShardAdds<'a> {
    shard: &'a Shard,
    vectors: Vec<(u64, &'a [f32])>,
}

impl ShardAdds<'_> {
    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    pub fn run(self) -> Result<(), StoreError> {
        self.vectors.into_iter().try_for_each(|(key, vector)| self.shard.add(key, vector))
    }
}

fn index_error(context: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Io(format!("vector index: {context}: {error}"))
}

/// The file of shard `shard` of `shards` of the graph saved as `path`: the path itself for
/// one shard, `objects.0-of-2.usearch` beside `objects.usearch` for more.
fn shard_path(path: &Path, shard: usize, shards: usize) -> PathBuf {
    if shards == 1 {
        path.to_owned()
    } else {
        path.with_extension(format!("{shard}-of-{shards}.usearch"))
    }
}

impl VectorIndex {
    pub fn new(
        dimension: usize,
        params: HnswParams,
        encoding: VectorEncoding,
        shards: usize,
    ) -> Result<Self, StoreError> {
        let options = IndexOptions {
            dimensions: dimension,
            metric: encoding.metric(),
            quantization: encoding.scalar_kind(),
            connectivity: params.connectivity,
            expansion_add: params.expansion_add,
            expansion_search: params.expansion_search,
            multi: false,
        };
        let shards = (0..shards.max(1))
            .map(|_| {
                let index = Index::new(&options).map_err(|e| index_error("create", e))?;
                Ok(Shard { index, encoding, nodes: AtomicUsize::new(0), reused: AtomicUsize::new(0) })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(VectorIndex { shards, dimension, encoding })
    }

    /// Loads a graph saved as `path` in `shards` shards; fails if a shard file is missing or
    /// was built from records of another `generation`, in another encoding or for another
    /// dimension.
    pub fn load(
        path: &Path,
        dimension: usize,
        params: HnswParams,
        encoding: VectorEncoding,
        shards: usize,
        generation: u64,
    ) -> Result<Self, StoreError> {
        let loaded = Self::new(dimension, params, encoding, shards)?;
        let count = loaded.shards.len();
        for (i, shard) in loaded.shards.iter().enumerate() {
            let path = shard_path(path, i, count);
            let context = format!("load {}", path.display());
            let trailer = read_trailer(&path)?;
            let (saved_generation, saved_encoding) = (trailer.generation, trailer.encoding);
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
            shard.index.load(&path.to_string_lossy()).map_err(|e| index_error(&context, e))?;
            if shard.index.dimensions() != dimension {
                return Err(index_error(&context, format!("saved graph has dimension {}", shard.index.dimensions())));
            }
            shard.index.change_expansion_search(params.expansion_search);
            // usearch keeps removed vectors' nodes in its file and reuses them after a load.
            shard.nodes.store(trailer.nodes.max(shard.index.size()), Ordering::Relaxed);
            shard.reused.store(trailer.reused, Ordering::Relaxed);
        }
        Ok(loaded)
    }

    /// Whether every shard file of the graph saved as `path` exists.
    pub fn is_saved_at(&self, path: &Path) -> bool {
        (0..self.shards.len()).all(|i| shard_path(path, i, self.shards.len()).exists())
    }

    /// Saves the graph as `path`: each shard to a temporary file with the trailer naming
    /// `generation` and the encoding, fsynced, then renamed over its file. Files of the
    /// same graph saved in another number of shards are removed after. The caller fsyncs
    /// the folder.
    pub fn save(&self, path: &Path, generation: u64) -> Result<(), StoreError> {
        let count = self.shards.len();
        let mut saved = Vec::with_capacity(count);
        for (i, shard) in self.shards.iter().enumerate() {
            let target = shard_path(path, i, count);
            let temporary = target.with_extension("usearch.tmp");
            let context = format!("save {}", temporary.display());
            shard.index.save(&temporary.to_string_lossy()).map_err(|e| index_error(&context, e))?;
            let mut file =
                std::fs::OpenOptions::new().append(true).open(&temporary).map_err(|e| index_error(&context, e))?;
            let words = [
                generation,
                self.encoding.code(),
                shard.nodes.load(Ordering::Relaxed) as u64,
                shard.reused.load(Ordering::Relaxed) as u64,
            ];
            let trailer: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).chain(TRAILER_MAGIC).collect();
            file.write_all(&trailer)
                .and_then(|()| file.sync_all())
                .map_err(|e| index_error(&format!("write the trailer of {}", temporary.display()), e))?;
            std::fs::rename(&temporary, &target)
                .map_err(|e| index_error(&format!("rename {} -> {}", temporary.display(), target.display()), e))?;
            saved.push(target);
        }
        remove_other_layouts(path, &saved)
    }

    /// The position of the shard that holds `key`. Part of the saved layout: a graph saved
    /// in n shards holds each key in the shard this names for n. The key is mixed first so
    /// that the parts of one image and consecutive slots spread evenly.
    fn shard_position(&self, key: u64) -> usize {
        match self.shards.len() {
            1 => 0,
            n => (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % n,
        }
    }

    fn shard_of(&self, key: u64) -> &Shard {
        &self.shards[self.shard_position(key)]
    }

    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.index.size()).sum()
    }

    /// Vectors the graph has room for without growing.
    pub fn capacity(&self) -> usize {
        self.shards.iter().map(|s| s.index.capacity()).sum()
    }

    /// Bytes usearch holds for the graph (vectors, links, reserved room).
    pub fn memory_bytes(&self) -> usize {
        self.shards.iter().map(|s| s.index.memory_usage()).sum()
    }

    /// Makes room for the vectors of `keys`, doubling each shard's room so that growth is
    /// amortised.
    pub fn reserve(&self, keys: impl IntoIterator<Item = u64>) -> Result<(), StoreError> {
        let mut additional = vec![0; self.shards.len()];
        for key in keys {
            additional[self.shard_position(key)] += 1;
        }
        for (shard, additional) in self.shards.iter().zip(additional) {
            let index = &shard.index;
            let needed = index.size() + additional;
            if needed > index.capacity() {
                let capacity = needed.max(index.capacity() * 2).max(1024);
                let threads = std::thread::available_parallelism().map_or(4, |n| n.get()).max(4);
                index.reserve_capacity_and_threads(capacity, threads).map_err(|e| index_error("reserve", e))?;
            }
        }
        Ok(())
    }

    /// Adds a vector; the caller has reserved room. A key already present is left as is.
    /// The store adds in batches ([`VectorIndex::adds`]); single adds are the tests'.
    #[cfg(test)]
    pub fn add(&self, key: u64, vector: &[f32]) -> Result<(), StoreError> {
        self.shard_of(key).add(key, vector)
    }

    /// `vectors` grouped by shard, each group for one thread to add (into room reserved
    /// before).
    pub fn adds<'a>(&'a self, vectors: Vec<(u64, &'a [f32])>) -> Vec<ShardAdds<'a>> {
        let mut groups: Vec<ShardAdds<'a>> =
            self.shards.iter().map(|shard| ShardAdds { shard, vectors: Vec::new() }).collect();
        for (key, vector) in vectors {
            groups[self.shard_position(key)].vectors.push((key, vector));
        }
        groups.retain(|group| group.len() > 0);
        groups
    }

    /// Nodes of removed vectors that no add has taken again: searches still walk them and
    /// they hold memory, until the graph is compacted.
    pub fn removed(&self) -> usize {
        self.shards.iter().map(|s| s.nodes.load(Ordering::Relaxed).saturating_sub(s.index.size())).sum()
    }

    /// Adds that took a removed vector's node since the graph was built (saved with it).
    pub fn reused(&self) -> usize {
        self.shards.iter().map(|s| s.reused.load(Ordering::Relaxed)).sum()
    }

    pub fn contains(&self, key: u64) -> bool {
        self.shard_of(key).index.contains(key)
    }

    pub fn remove(&self, key: u64) -> Result<(), StoreError> {
        self.shard_of(key).index.remove(key).map(drop).map_err(|e| index_error("remove", e))
    }

    /// Copies the graph's vector of `key` into `buffer` (decoded from the graph's encoding,
    /// so exact only for f32); false when absent.
    pub fn vector(&self, key: u64, buffer: &mut [f32]) -> bool {
        matches!(self.shard_of(key).index.get(key, buffer), Ok(n) if n > 0)
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
    /// inside the graph search, so non-matching vectors never take a result's place. The
    /// shards are searched in parallel, each for `count`, and the best `count` kept.
    pub fn search(
        &self,
        query: &[f32],
        count: usize,
        keep: Option<&(dyn Fn(u64) -> bool + Sync)>,
    ) -> Result<Vec<(u64, f32)>, StoreError> {
        let query_i8 = match self.encoding {
            VectorEncoding::I8 => to_i8(query),
            VectorEncoding::F32 | VectorEncoding::F16 => Vec::new(),
        };
        let search_shard = |shard: &Shard| {
            let matches = match self.encoding {
                VectorEncoding::I8 => shard.search(&query_i8, count, keep),
                VectorEncoding::F32 | VectorEncoding::F16 => shard.search(query, count, keep),
            }?;
            Ok(matches
                .keys
                .into_iter()
                .zip(matches.distances)
                .map(|(key, distance)| (key, self.encoding.cosine_of(distance)))
                .collect::<Vec<_>>())
        };
        if let [shard] = &self.shards[..] {
            return search_shard(shard);
        }
        let mut found: Vec<(u64, f32)> =
            self.shards.par_iter().map(search_shard).collect::<Result<Vec<_>, StoreError>>()?.concat();
        found.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
        found.truncate(count);
        Ok(found)
    }

    pub fn dimension(&self) -> usize {
        self.dimension
    }

    pub fn encoding(&self) -> VectorEncoding {
        self.encoding
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

/// Removes the files of the graph saved as `path` that are not in `kept`: those of a layout
/// with another number of shards (the single file, or `stem.i-of-n.usearch`).
fn remove_other_layouts(path: &Path, kept: &[PathBuf]) -> Result<(), StoreError> {
    let (Some(folder), Some(stem)) = (path.parent(), path.file_stem().and_then(|s| s.to_str())) else {
        return Ok(());
    };
    let entries = std::fs::read_dir(folder).map_err(|e| index_error(&format!("list {}", folder.display()), e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let sharded = name
            .strip_prefix(stem)
            .and_then(|rest| rest.strip_prefix('.'))
            .and_then(|rest| rest.strip_suffix(".usearch"))
            .is_some_and(|layout| layout.split_once("-of-").is_some());
        let file = entry.path();
        if (sharded || file == path) && !kept.contains(&file) {
            std::fs::remove_file(&file).map_err(|e| index_error(&format!("remove {}", file.display()), e))?;
        }
    }
    Ok(())
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
                let read = self.index.shard_of(key).index.get(key, &mut self.i8_buffer).ok()?;
                (read > 0).then(|| i8_cosine(&self.quantized, &self.i8_buffer))
            }
            VectorEncoding::F32 | VectorEncoding::F16 => {
                self.index.vector(key, &mut self.f32_buffer).then(|| cosine(self.query, &self.f32_buffer))
            }
        }
    }
}

/// `vector` as an i8 graph holds it: scaled to length [`I8_LENGTH`] and rounded (usearch's
/// own cast truncates, which shortens each vector by a different amount, and inner
/// products would then rank by length too). All zero for a zero vector.
fn to_i8(vector: &[f32]) -> Vec<i8> {
    let length = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    let scale = if length > 0.0 { I8_LENGTH / length } else { 0.0 };
    vector.iter().map(|x| (x * scale).round().clamp(-I8_LENGTH, I8_LENGTH) as i8).collect()
}

/// `vector` scaled so that its largest magnitude is 127, rounded.
fn quantize(vector: &[f32]) -> Vec<i8> {
    let largest = vector.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let scale = if largest > 0.0 { 127.0 / largest } else { 0.0 };
    vector.iter().map(|x| (x * scale).round().clamp(-127.0, 127.0) as i8).collect()
}

/// Cosine of two i8 vectors with numkong's kernel (the one usearch uses, chosen at run time
/// for the CPU: 47 ns against 250 ns for a plain loop at 512-d on this AVX2 machine); 0 when
/// either is all zero.
fn i8_cosine(a: &[i8], b: &[i8]) -> f32 {
    i8::angular(a, b).map_or(0.0, |distance| (1.0 - distance).clamp(-1.0, 1.0))
}

/// What a saved graph's trailer says.
struct Trailer {
    generation: u64,
    encoding: u64,
    /// Both 0 in the trailer of earlier builds.
    nodes: usize,
    reused: usize,
}

fn read_trailer(path: &Path) -> Result<Trailer, StoreError> {
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
    let magic = &trailer[trailer.len() - 8..];
    // The words before the magic, counted back from it.
    let word = |i: usize, len: u64| {
        let start = (TRAILER_LEN - len) as usize + 8 * i;
        u64::from_le_bytes(trailer[start..start + 8].try_into().expect("8 bytes"))
    };
    if magic == TRAILER_MAGIC {
        let len = TRAILER_LEN;
        Ok(Trailer {
            generation: word(0, len),
            encoding: word(1, len),
            nodes: word(2, len) as usize,
            reused: word(3, len) as usize,
        })
    } else if magic == TRAILER_V2_MAGIC {
        let len = TRAILER_V2_LEN;
        Ok(Trailer { generation: word(0, len), encoding: word(1, len), nodes: 0, reused: 0 })
    } else {
        Err(index_error(&context, "no generation trailer (saved by an older build, or damaged)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i8_scores_follow_f32_cosine() {
        let index = VectorIndex::new(64, HnswParams::default(), VectorEncoding::I8, 1).unwrap();
        index.reserve(0..50).unwrap();
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
        // The graph's own scores (inner products of the i8 vectors) stand for cosine too.
        let found = index.search(&query, 50, None).unwrap();
        assert_eq!(found.len(), 50);
        for (key, approximate) in found {
            let exact = cosine(&query, &vector(key));
            assert!((exact - approximate).abs() < 0.02, "key {key}: graph {approximate} against f32 {exact}");
        }
    }

    #[test]
    fn i8_vectors_have_one_length() {
        assert_eq!(to_i8(&[3.0, 4.0]), vec![76, 102], "rounded, not truncated (76.2, 101.6)");
        assert_eq!(to_i8(&[0.0, 0.0]), vec![0, 0]);
        for seed in 0..20 {
            let length = to_i8(&vector(seed)).iter().map(|&x| f32::from(x).powi(2)).sum::<f32>().sqrt();
            assert!((length - I8_LENGTH).abs() < 1.0, "seed {seed}: length {length}");
        }
    }

    /// i8 graphs of earlier builds (trailer code 8: usearch's truncating cast, cosine) are
    /// refused, so the open rebuilds them.
    #[test]
    fn i8_graphs_of_earlier_builds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.usearch");
        let index = VectorIndex::new(64, HnswParams::default(), VectorEncoding::I8, 1).unwrap();
        index.reserve(0..10).unwrap();
        (0..10).for_each(|key| index.add(key, &vector(key)).unwrap());
        index.save(&path, 3).unwrap();
        let load = || VectorIndex::load(&path, 64, HnswParams::default(), VectorEncoding::I8, 1, 3);
        assert_eq!(load().unwrap().len(), 10);
        let mut bytes = std::fs::read(&path).unwrap();
        let code = bytes.len() - TRAILER_LEN as usize + 8;
        bytes[code..code + 8].copy_from_slice(&8u64.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        let refused = load().err().expect("code 8 refused").to_string();
        assert!(refused.contains("encoding code 8"), "{refused}");
    }

    #[test]
    fn i8_cosine_is_the_integer_cosine() {
        assert_eq!(i8_cosine(&[0, 0], &[3, 4]), 0.0);
        assert_eq!(i8_cosine(&[127, 0], &[-5, 0]), -1.0);
        assert_eq!(quantize(&[0.5, -0.25]), vec![127, -64]);
        // 520-d: the SIMD kernel's blocks and its tail.
        let long = |seed: u64| -> Vec<f32> { (0..520).map(|i| vector(seed * 9 + i / 64)[(i % 64) as usize]).collect() };
        for seed in 0..20 {
            let (a, b) = (quantize(&long(seed)), to_i8(&long(seed + 100)));
            let sum = |f: &dyn Fn(f64, f64) -> f64| a.iter().zip(&b).map(|(&x, &y)| f(x.into(), y.into())).sum::<f64>();
            let exact = sum(&|x, y| x * y) / (sum(&|x, _| x * x) * sum(&|_, y| y * y)).sqrt();
            let kernel = f64::from(i8_cosine(&a, &b));
            assert!((kernel - exact).abs() < 1e-4, "seed {seed}: kernel {kernel} against {exact}");
        }
    }

    /// A deterministic 64-d vector per seed.
    fn vector(seed: u64) -> Vec<f32> {
        (0..64).map(|i| (((seed * 7919 + i * 104_729) % 2003) as f32 / 1001.0) - 1.0).collect()
    }

    /// `count` part keys of consecutive slots, four parts each, with their vectors.
    fn part_vectors(count: u64) -> Vec<(u64, Vec<f32>)> {
        (0..count).map(|i| (part_key(i / 4, (i % 4) as usize), vector(i))).collect()
    }

    fn filled(shards: usize, vectors: &[(u64, Vec<f32>)]) -> VectorIndex {
        let index = VectorIndex::new(64, HnswParams::default(), VectorEncoding::F32, shards).unwrap();
        index.reserve(vectors.iter().map(|(key, _)| *key)).unwrap();
        let adds = index.adds(vectors.iter().map(|(key, v)| (*key, &v[..])).collect());
        assert_eq!(adds.len(), shards, "every shard gets vectors");
        adds.into_iter().try_for_each(ShardAdds::run).unwrap();
        index
    }

    #[test]
    fn shards_share_the_keys_and_search_together() {
        let vectors = part_vectors(600);
        let index = filled(2, &vectors);
        assert_eq!(index.len(), 600);
        let sizes: Vec<usize> = index.shards.iter().map(|s| s.index.size()).collect();
        assert!(sizes.iter().all(|&n| (240..=360).contains(&n)), "uneven shards {sizes:?}");
        for (key, v) in &vectors {
            assert!(index.contains(*key) && index.shard_of(*key).index.contains(*key));
            let mut buffer = vec![0.0; 64];
            assert!(index.vector(*key, &mut buffer) && buffer == *v, "key {key} reads back");
        }
        // Against brute force: a candidate list larger than either shard is exhaustive.
        let query = vector(10_000);
        let mut exact: Vec<(u64, f32)> = vectors.iter().map(|(key, v)| (*key, cosine(&query, v))).collect();
        exact.sort_by(|a, b| b.1.total_cmp(&a.1));
        let found = index.search(&query, 400, None).unwrap();
        let top = |hits: &[(u64, f32)]| hits.iter().take(10).map(|(key, _)| *key).collect::<Vec<_>>();
        assert_eq!(found.len(), 400);
        assert_eq!(top(&found), top(&exact));
        assert!(found.windows(2).all(|w| w[0].1 >= w[1].1), "merged best first");
        let odd_slots = |key: u64| split_part_key(key).0 % 2 == 1;
        let filtered = index.search(&query, 400, Some(&odd_slots)).unwrap();
        let exact_odd: Vec<(u64, f32)> = exact.iter().copied().filter(|(key, _)| odd_slots(*key)).collect();
        assert_eq!(top(&filtered), top(&exact_odd));
    }

    #[test]
    fn sharded_graph_saves_loads_and_replaces_other_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("objects.usearch");
        let vectors = part_vectors(300);
        let load = |shards| VectorIndex::load(&path, 64, HnswParams::default(), VectorEncoding::F32, shards, 9);
        filled(1, &vectors).save(&path, 9).unwrap();
        assert!(load(2).is_err(), "no files of two shards yet");
        let sharded = filled(2, &vectors);
        sharded.save(&path, 9).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["objects.0-of-2.usearch", "objects.1-of-2.usearch"], "the single file went");
        assert!(sharded.is_saved_at(&path));
        let loaded = load(2).unwrap();
        assert_eq!(loaded.len(), 300);
        assert!(vectors.iter().all(|(key, _)| loaded.shard_of(*key).index.contains(*key)), "keys in their shards");
        assert!(load(1).is_err(), "the single-file layout is gone");
        std::fs::remove_file(dir.path().join("objects.1-of-2.usearch")).unwrap();
        assert!(!sharded.is_saved_at(&path));
        assert!(load(2).is_err(), "a missing shard fails the load");
    }

    /// Adds that take removed nodes are counted, and the counts of nodes and reuses are saved
    /// with the graph; a graph saved with the earlier trailer loads with none.
    #[test]
    fn reused_nodes_are_counted_and_saved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.usearch");
        let index = filled(1, &part_vectors(100));
        for (key, _) in &part_vectors(30) {
            index.remove(*key).unwrap();
        }
        assert_eq!((index.len(), index.removed(), index.reused()), (70, 30, 0));
        let newer: Vec<(u64, Vec<f32>)> = (1000..1020).map(|i| (part_key(i, 0), vector(i))).collect();
        newer.iter().for_each(|(key, v)| index.add(*key, v).unwrap());
        assert_eq!((index.len(), index.removed(), index.reused()), (90, 10, 20), "20 of the 30 nodes taken");
        index.save(&path, 5).unwrap();
        let load = || VectorIndex::load(&path, 64, HnswParams::default(), VectorEncoding::F32, 1, 5).unwrap();
        let loaded = load();
        assert_eq!((loaded.len(), loaded.removed(), loaded.reused()), (90, 10, 20));
        // usearch gives the removed nodes out again after a load: 10 of these take them.
        let more: Vec<(u64, Vec<f32>)> = (2000..2015).map(|i| (part_key(i, 0), vector(i))).collect();
        loaded.reserve(more.iter().map(|(key, _)| *key)).unwrap();
        more.iter().for_each(|(key, v)| loaded.add(*key, v).unwrap());
        assert_eq!((loaded.len(), loaded.removed(), loaded.reused()), (105, 0, 30));

        // The earlier trailer: generation, encoding, magic.
        let bytes = std::fs::read(&path).unwrap();
        let mut earlier = bytes[..bytes.len() - TRAILER_LEN as usize].to_vec();
        earlier.extend(5u64.to_le_bytes().into_iter().chain(VectorEncoding::F32.code().to_le_bytes()));
        earlier.extend(TRAILER_V2_MAGIC);
        std::fs::write(&path, earlier).unwrap();
        let loaded = load();
        assert_eq!((loaded.len(), loaded.removed(), loaded.reused()), (90, 0, 0));
        std::fs::write(&path, &bytes[..bytes.len() - 8]).unwrap();
        assert!(VectorIndex::load(&path, 64, HnswParams::default(), VectorEncoding::F32, 1, 5).is_err(), "no magic");
    }

    #[test]
    fn part_keys_round_trip() {
        assert_eq!(split_part_key(part_key(123_456, 65_535)), (123_456, 65_535));
        assert_eq!(split_part_key(part_key(0, 0)), (0, 0));
    }
}
