//! The embedded store: no server, one folder on disk.
//!
//! Records live in [redb](https://docs.rs/redb), an ACID key-value store with copy-on-write
//! B-trees and checksummed, fsync'ed commits: a `put` returns after its write transaction
//! commits with `Durability::Immediate`, so `kill -9` at any moment loses nothing that was
//! acknowledged, and a torn write is never visible. redb is pure Rust, maintained and
//! stable-format since 2.0.
//!
//! Vectors are searched in [usearch](https://docs.rs/usearch) HNSW graphs (one each for
//! images, objects and faces). usearch was chosen over `hnsw_rs` and `instant-distance`
//! because its search takes a predicate that is tested inside the graph traversal (filtered
//! k-NN without losing results to post-filtering), it removes vectors, saves and loads
//! graphs, and is actively released. The graphs are a cache of what redb holds: on open
//! the saved graphs (written by [`EmbeddedStore::checkpoint`] and on drop) are loaded
//! and reconciled key by key with the records, or rebuilt from the records when absent,
//! unreadable or saved from another records database (each graph carries the generation
//! drawn when `records.redb` was created).
//!
//! A stored record that cannot be served (undecodable, another vector length, a value
//! `put` would refuse, a slot clash) never fails the open: it is moved to a quarantine
//! table with its reason, logged, and counted ([`Store::quarantined`]).
//!
//! Filtered search plans per query (see [`catalog`]): when the cheap indexes show at most
//! `exact_scan_limit` candidate images, or the matches cost less to scan than the traversal
//! expects to test (`exact_scan_factor`), their vectors are scanned; otherwise the filter is
//! tested inside the HNSW traversal, which gives way to a scan of every matching image when
//! it passes its budget of tests or comes back short of `k`. Scores are true cosine either
//! way. Image hits are completed from their records (one read transaction per search) with
//! the matched object ([`crate::matching`]).
//!
//! An open whose saved graphs lack vectors written after their last save hands them to a
//! background catch-up ([`pending`]); searches score them exactly until it is done.

mod catalog;
mod codec;
mod pending;
mod vector_file;
mod vectors;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rayon::prelude::*;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::matching;
use crate::validate::{check_header, check_query, check_record, cosine};
use crate::{
    FaceHit, ImageHit, ImageRecord, ObjectHit, Page, PutOutcome, QueryLimits, Result, SearchFilter, Store, StoreError,
};
use catalog::{Candidates, Catalog, ImageEntry, ResolvedFilter, Scope};
use pending::Pending;
use vector_file::VectorFile;
use vectors::{part_key, split_part_key, VectorIndex};
pub use vectors::{HnswParams, VectorEncoding};

/// Image id -> codec value (slot, first vector in the vector file, record without vectors).
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
/// Layout 1: image id -> slot, record and its vectors; emptied into `RECORDS` and the vector
/// file at the first open by this build.
const LAYOUT_1_RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// Store-wide counters and settings.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_SCHEMA: &str = "schema_version";
const META_DIMENSION: &str = "dimension";
const META_NEXT_SLOT: &str = "next_slot";
/// A random number drawn when the database is created; every saved graph carries it, so a
/// graph from another database (another folder, a replaced `records.redb`) is never loaded.
const META_GENERATION: &str = "generation";
/// Records that could not be served, set aside at open: sequence number -> (image id,
/// reason, the stored value as it was).
const QUARANTINE: TableDefinition<u64, (&str, &str, &[u8])> = TableDefinition::new("quarantine");

/// Version of the on-disk layout (codec, tables, vector file); a store written by a newer
/// version is refused with `SchemaMismatch` instead of being misread, one of version 1
/// (vectors inside the records) is moved to version 2 at open.
pub const SCHEMA_VERSION: u64 = 2;

/// Layout-1 records moved per write transaction.
const LAYOUT_MOVE_BATCH: usize = 1000;

/// Records inserted into the graphs together (in parallel) while rebuilding.
const RECOVERY_BATCH: usize = 1024;

/// Default of `EmbeddedConfig::object_expansion_factor`: at 4 million object vectors the
/// images' candidate list (128) found 0.82 of the exact top 10, twice as long 0.95, four
/// times 0.96 (docs/stores.md).
const OBJECT_EXPANSION_FACTOR: usize = 4;

const RECORDS_FILE: &str = "records.redb";
const VECTORS_FILE: &str = "vectors.f32";
const GRAPH_FILES: [&str; 3] = ["images.usearch", "objects.usearch", "faces.usearch"];

#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Folder of the store; created if missing.
    pub path: PathBuf,
    /// Vector length; `None` takes it from the store on disk or from the first record.
    pub dimension: Option<usize>,
    pub limits: QueryLimits,
    pub hnsw: HnswParams,
    /// Object searches use a candidate list this many times `hnsw.expansion_search`: the
    /// object graph holds about four vectors an image, in clusters four times as dense as
    /// the images', and needs a longer list for the same recall.
    pub object_expansion_factor: usize,
    /// In-graph filtered searches collect this many times their kind's candidate list of
    /// matches: a traversal through a filter misses more of the exact top 10 than an
    /// unfiltered one, most where the filter passes a tenth or so of the vectors (beyond
    /// that it is scanned; docs/stores.md, "Filtered search").
    pub filtered_expansion_factor: usize,
    /// Shards of the object graph. usearch cannot fill one graph from several threads
    /// safely, so a batch's inserts run one thread per shard; the object graph holds about
    /// four of an image's six vectors, and in two shards it and the image and face graphs
    /// keep two cores equally busy. A store saved with another number is rebuilt once.
    pub object_graph_shards: usize,
    /// A filter whose candidates (from the class, tag and date indexes) number at most
    /// this many images is answered by an exact scan instead of the graph.
    pub exact_scan_limit: usize,
    /// A filter is also answered by an exact scan of its matches when they number at most
    /// this many times the vectors an in-graph search expects to test (its candidate list
    /// divided by the share that passes): at a million images the traversal found less
    /// than 0.95 of the exact top 10 for filters passing up to 4% of the objects or 8% of
    /// the faces (docs/stores.md).
    pub exact_scan_factor: f32,
    /// How the graphs hold their vectors (the records always keep f32).
    pub encoding: VectorEncoding,
    /// A filter passing at least this share of a graph's vectors (and more than
    /// `exact_scan_limit` of them) is tested inside the graph traversal, which walks on
    /// through vectors that fail it until it holds `expansion_search` that pass; a rarer one
    /// filters the candidates of an unfiltered search widened by 1 / share.
    pub in_graph_filter_fraction: f32,
    /// With a compact encoding, the best `rescore_factor * max(offset + k, 10)` candidates
    /// by the graph's approximate score are scored again with the stored f32 vectors.
    pub rescore_factor: usize,
    pub checkpoint: CheckpointPolicy,
    /// A graph is rebuilt from the vectors it holds once the nodes of removed vectors pass
    /// this share of its nodes (by the background thread, or [`EmbeddedStore::compact`]).
    pub compact_removed_fraction: f32,
    /// A graph is also rebuilt once the adds that took a removed vector's node since it was
    /// built pass this share of the vectors it holds: each such reuse leaves stale links
    /// behind, and searches find less (docs/stores.md measures it). 0 turns this off.
    pub compact_reused_fraction: f32,
    /// When the saved graphs lack at most this many vectors of the records (written after
    /// the last checkpoint), open returns before inserting them: a background thread
    /// inserts them while searches score them exactly, held in memory (4 bytes a
    /// dimension each). More, or graphs rebuilt, are inserted before open returns.
    pub background_replay_max_vectors: usize,
}

/// When the graphs are saved in the background (besides [`EmbeddedStore::checkpoint`] and
/// the last handle's drop). A kill -9 costs at most the vectors changed since the last save:
/// the next open inserts them again.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointPolicy {
    /// Save once this many vectors (image, object and face) were added or removed since
    /// the last save; 0 turns the count off.
    pub after_changes: u64,
    /// Save changes older than this; `None` turns the clock off.
    pub interval: Option<Duration>,
}

impl CheckpointPolicy {
    /// No background saves: only [`EmbeddedStore::checkpoint`] and drop save the graphs.
    pub const MANUAL: CheckpointPolicy = CheckpointPolicy { after_changes: 0, interval: None };

    fn is_manual(&self) -> bool {
        self.after_changes == 0 && self.interval.is_none()
    }
}

impl Default for CheckpointPolicy {
    /// About 20 s of replay at the most after a crash: a rebuild inserts some 5,000 vectors
    /// a second per graph on one core.
    fn default() -> Self {
        CheckpointPolicy { after_changes: 100_000, interval: Some(Duration::from_secs(60)) }
    }
}

impl EmbeddedConfig {
    /// The HNSW parameters of the graph of `kind`.
    fn hnsw_of(&self, kind: Kind) -> HnswParams {
        match kind {
            Kind::Object => HnswParams {
                expansion_search: self.hnsw.expansion_search * self.object_expansion_factor.max(1),
                ..self.hnsw
            },
            Kind::Image | Kind::Face => self.hnsw,
        }
    }

    /// How many shards the graph of `kind` is made of.
    fn shards_of(&self, kind: Kind) -> usize {
        match kind {
            Kind::Object => self.object_graph_shards.max(1),
            Kind::Image | Kind::Face => 1,
        }
    }

    pub fn new(path: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            path: path.into(),
            dimension: None,
            limits: QueryLimits::default(),
            hnsw: HnswParams::default(),
            object_expansion_factor: OBJECT_EXPANSION_FACTOR,
            filtered_expansion_factor: 2,
            object_graph_shards: 2,
            exact_scan_limit: 5_000,
            exact_scan_factor: 96.0,
            in_graph_filter_fraction: 0.0,
            encoding: VectorEncoding::default(),
            rescore_factor: 4,
            checkpoint: CheckpointPolicy::default(),
            compact_removed_fraction: 0.25,
            compact_reused_fraction: 0.5,
            // Twice the default checkpoint count: about 400 MB of 512-d vectors at most.
            background_replay_max_vectors: 200_000,
        }
    }
}

/// What the graphs hold now (for `/health`, the benchmark and tests), per graph in the
/// order images, objects, faces.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GraphStats {
    pub vectors: [usize; 3],
    /// Room reserved; deletes free room that later puts reuse.
    pub capacity: [usize; 3],
    pub memory_bytes: usize,
    /// Nodes of removed vectors not yet taken by a new one (see `compact_removed_fraction`).
    pub removed: [usize; 3],
    /// Adds that took a removed vector's node since each graph was built (see
    /// `compact_reused_fraction`).
    pub reused: [usize; 3],
    /// Vectors added or removed since the graphs were last saved.
    pub unsaved_changes: u64,
}

/// How the last open brought the graphs up to date (for logs and the benchmark).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexRecovery {
    /// Nothing was stored.
    Empty,
    /// Saved graphs loaded; the vectors of this many records added (or handed to the
    /// background catch-up) and this many vectors removed to match the records.
    Loaded { added: usize, removed: usize },
    /// No usable saved graphs: every vector was inserted again.
    Rebuilt,
}

/// Which graph a vector lives in; also its index in per-graph arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Image = 0,
    Object = 1,
    Face = 2,
}

/// The three graphs; they exist once the dimension is known.
struct Graphs {
    images: VectorIndex,
    objects: VectorIndex,
    faces: VectorIndex,
}

impl Graphs {
    fn new(config: &EmbeddedConfig, dimension: usize) -> Result<Self> {
        let new = |kind| VectorIndex::new(dimension, config.hnsw_of(kind), config.encoding, config.shards_of(kind));
        Ok(Graphs { images: new(Kind::Image)?, objects: new(Kind::Object)?, faces: new(Kind::Face)? })
    }

    fn load(config: &EmbeddedConfig, dimension: usize, generation: u64) -> Result<Self> {
        let load = |kind: Kind| {
            let path = config.path.join(GRAPH_FILES[kind as usize]);
            let (params, shards) = (config.hnsw_of(kind), config.shards_of(kind));
            VectorIndex::load(&path, dimension, params, config.encoding, shards, generation)
        };
        Ok(Graphs { images: load(Kind::Image)?, objects: load(Kind::Object)?, faces: load(Kind::Face)? })
    }

    /// Whether the graphs hold every vector of the image in `slot`.
    fn hold(&self, slot: u64, image: &ImageEntry) -> bool {
        self.images.contains(slot)
            && (0..image.objects.len()).all(|i| self.objects.contains(part_key(slot, i)))
            && (0..image.face_boxes.len()).all(|i| self.faces.contains(part_key(slot, i)))
    }

    fn all(&self) -> [&VectorIndex; 3] {
        [&self.images, &self.objects, &self.faces]
    }

    fn get_mut(&mut self, kind: Kind) -> &mut VectorIndex {
        match kind {
            Kind::Image => &mut self.images,
            Kind::Object => &mut self.objects,
            Kind::Face => &mut self.faces,
        }
    }

    /// Reserves room for and adds the vectors of many records; needs the only access to the
    /// graphs (reserving may move them), so only for open.
    fn add_all(&self, records: &[(u64, ImageRecord)]) -> Result<usize> {
        self.reserve_for(records)?;
        self.add_reserved(records)
    }

    /// Keeps out of the graphs the vectors of `record` that they lack: they go to `pending`
    /// for the background catch-up. Adds their keys to `held` (per graph), for which the
    /// caller reserves room.
    fn hold_back(&self, slot: u64, record: ImageRecord, pending: &mut Pending, held: &mut [Vec<u64>; 3]) {
        let mut hold = |kind: Kind, graph: &VectorIndex, key: u64, vector: Vec<f32>| {
            if !graph.contains(key) {
                pending.insert(kind, key, vector);
                held[kind as usize].push(key);
            }
        };
        hold(Kind::Image, &self.images, slot, record.embedding);
        for (i, object) in record.objects.into_iter().enumerate() {
            hold(Kind::Object, &self.objects, part_key(slot, i), object.embedding);
        }
        for (i, face) in record.faces.into_iter().enumerate() {
            hold(Kind::Face, &self.faces, part_key(slot, i), face.embedding);
        }
    }

    /// Adds the vectors of many records into room reserved before; searches may run
    /// meanwhile. Returns how many records.
    fn add_reserved(&self, records: &[(u64, ImageRecord)]) -> Result<usize> {
        let parts = |vectors: fn(&ImageRecord) -> Vec<&[f32]>| -> Vec<(u64, &[f32])> {
            records
                .iter()
                .flat_map(|(slot, record)| {
                    vectors(record).into_iter().enumerate().map(|(i, vector)| (part_key(*slot, i), vector))
                })
                .collect()
        };
        self.add_keyed([
            records.iter().map(|(slot, record)| (*slot, &record.embedding[..])).collect(),
            parts(|r| r.objects.iter().map(|o| &o.embedding[..]).collect()),
            parts(|r| r.faces.iter().map(|f| &f.embedding[..]).collect()),
        ])?;
        Ok(records.len())
    }

    /// Adds (key, vector) pairs, per graph in `Kind` order, into room reserved before. Each
    /// shard is filled by one thread (usearch cannot fill one from several, see
    /// [`vectors::ShardAdds`]): the shards' lists go, longest first, to whichever of one
    /// list per core has the fewest vectors, and the lists run in parallel.
    fn add_keyed(&self, vectors: [Vec<(u64, &[f32])>; 3]) -> Result<()> {
        let mut adds: Vec<_> = self.all().into_iter().zip(vectors).flat_map(|(graph, v)| graph.adds(v)).collect();
        adds.sort_unstable_by_key(|adds| std::cmp::Reverse(adds.len()));
        let cores = rayon::current_num_threads().clamp(1, adds.len().max(1));
        let mut lists: Vec<(usize, Vec<vectors::ShardAdds<'_>>)> = (0..cores).map(|_| (0, Vec::new())).collect();
        for adds in adds {
            let list = lists.iter_mut().min_by_key(|(vectors, _)| *vectors).expect("at least one list");
            list.0 += adds.len();
            list.1.push(adds);
        }
        lists.into_par_iter().try_for_each(|(_, list)| list.into_iter().try_for_each(vectors::ShardAdds::run))
    }

    /// Makes room for the vectors of `records`; needs the only access to the graphs.
    fn reserve_for(&self, records: &[(u64, ImageRecord)]) -> Result<()> {
        self.images.reserve(records.iter().map(|(slot, _)| *slot))?;
        let parts = |count: fn(&ImageRecord) -> usize| {
            records.iter().flat_map(move |(slot, record)| (0..count(record)).map(|i| part_key(*slot, i)))
        };
        self.objects.reserve(parts(|r| r.objects.len()))?;
        self.faces.reserve(parts(|r| r.faces.len()))
    }

    /// Removes every vector of `slot`; parts are numbered from 0 without gaps. Returns how
    /// many per graph. usearch reuses a removed vector's room for the next one added, so
    /// deletes followed by puts do not grow a graph.
    fn remove_slot(&self, slot: u64) -> Result<[u64; 3]> {
        let mut removed = [0; 3];
        if self.images.contains(slot) {
            self.images.remove(slot)?;
            removed[Kind::Image as usize] += 1;
        }
        for (parts, kind) in [(&self.objects, Kind::Object), (&self.faces, Kind::Face)] {
            let mut index = 0;
            while parts.contains(part_key(slot, index)) {
                parts.remove(part_key(slot, index))?;
                removed[kind as usize] += 1;
                index += 1;
            }
        }
        Ok(removed)
    }
}

struct State {
    dimension: Option<usize>,
    catalog: Catalog,
    graphs: Option<Graphs>,
    /// Vectors of stored records the graphs do not hold yet (see [`pending`]).
    pending: Pending,
    next_slot: u64,
}

struct Inner {
    config: EmbeddedConfig,
    db: Database,
    state: RwLock<State>,
    /// One writer at a time from "is this id stored?" to the in-memory update; a checkpoint
    /// holds it too, so the graphs do not change while they are saved. Searches never take
    /// it: they read the graphs under the state's read lock, which writers hold only while
    /// they reserve room and update the catalog, and checkpoints never hold exclusively.
    writer: Mutex<()>,
    /// Vectors added or removed per graph since it was last saved.
    changes: [AtomicU64; 3],
    /// When the graphs were last saved (or the store opened).
    saved_at: Mutex<Instant>,
    recovery: IndexRecovery,
    /// The f32 vectors of the records; opened once the dimension is known.
    vectors: OnceLock<VectorFile>,
    /// The records database's generation, written into every saved graph.
    generation: u64,
    /// Records the quarantine table holds (moved there by this or an earlier open).
    quarantined: usize,
}

/// What `META` holds.
struct Meta {
    /// Layout of the records (1: vectors inside them; [`SCHEMA_VERSION`]).
    layout: u64,
    dimension: Option<usize>,
    next_slot: u64,
    generation: u64,
}

/// A stored value that cannot be served, and why; moved to `QUARANTINE` at open.
struct Unreadable {
    id: String,
    reason: String,
    bytes: Vec<u8>,
}

/// The embedded store; cheap to clone (all clones share one open store).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
    /// Dropped with the last clone: stops the background threads and waits for them, so
    /// that the store is closed when the last handle is gone.
    _background: Arc<Background>,
}

/// The store's own threads: the checkpoints and compactions of the [`CheckpointPolicy`],
/// and the catch-up of vectors an open left pending. The checkpoint thread holds the store
/// weakly (the store closes when its last handle is dropped, not when the thread next
/// wakes); the catch-up holds it until it stops, at the end or when told to.
struct Background {
    stop: Arc<(Mutex<bool>, Condvar)>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// How often the checkpoint thread looks at the change counters.
const CHECKPOINT_POLL: Duration = Duration::from_millis(500);

impl Background {
    fn start(inner: &Arc<Inner>) -> Result<Background> {
        let mut background = Background { stop: Arc::new((Mutex::new(false), Condvar::new())), threads: Vec::new() };
        if !read(&inner.state).pending.is_empty() {
            background.start_catch_up(inner)?;
        }
        if !inner.config.checkpoint.is_manual() {
            let (store, signal) = (Arc::downgrade(inner), background.stop.clone());
            let thread = std::thread::Builder::new()
                .name("store-checkpoint".into())
                .spawn(move || checkpoint_loop(store, &signal))
                .map_err(|e| StoreError::Io(format!("start the checkpoint thread: {e}")))?;
            background.threads.push(thread);
        }
        Ok(background)
    }

    /// Starts inserting the pending vectors; returns once the thread holds the writer lock,
    /// so that no put or delete comes before the vectors it could touch are in the graphs.
    fn start_catch_up(&mut self, inner: &Arc<Inner>) -> Result<()> {
        let (store, stop) = (inner.clone(), self.stop.clone());
        let (holding, held) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-catch-up".into())
            .spawn(move || {
                let _writer = store.writer.lock().unwrap_or_else(|e| e.into_inner());
                let _ = holding.send(());
                let started = Instant::now();
                let stopped = || *stop.0.lock().unwrap_or_else(|e| e.into_inner());
                match store.catch_up(&stopped) {
                    Ok(vectors) => tracing::info!(
                        vectors,
                        seconds = started.elapsed().as_secs_f64(),
                        "graphs caught up with the records"
                    ),
                    // The records are safe; the next open finds these vectors missing again.
                    Err(error) => {
                        tracing::warn!(%error, "catching up the graphs failed: what is left stays searched exactly")
                    }
                }
            })
            .map_err(|e| StoreError::Io(format!("start the catch-up thread: {e}")))?;
        held.recv().map_err(|_| StoreError::Io("the catch-up thread ended before it held the writer lock".into()))?;
        self.threads.push(thread);
        Ok(())
    }
}

fn checkpoint_loop(store: Weak<Inner>, stop: &(Mutex<bool>, Condvar)) {
    let (stopped, wake) = stop;
    loop {
        let guard = stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = wake.wait_timeout(guard, CHECKPOINT_POLL).unwrap_or_else(|e| e.into_inner());
        if *guard {
            return;
        }
        drop(guard);
        let Some(inner) = store.upgrade() else { return };
        if inner.compaction_due() {
            if let Err(error) = inner.compact() {
                tracing::warn!(%error, "background compaction failed");
            }
        }
        if inner.checkpoint_due() {
            if let Err(error) = inner.checkpoint() {
                // The records are safe; the next open just replays more of them.
                tracing::warn!(%error, "background checkpoint failed");
            }
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_all();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn db_error(context: &'static str) -> impl Fn(redb::Error) -> StoreError {
    move |e| StoreError::Io(format!("record store: {context}: {e}"))
}

fn redb_err<E: Into<redb::Error>>(context: &'static str) -> impl Fn(E) -> StoreError {
    move |e| db_error(context)(e.into())
}

impl EmbeddedStore {
    /// Opens (or creates) the store and brings the vector graphs up to date. Blocking:
    /// from async code call it through `spawn_blocking`, or use [`EmbeddedStore::open_async`].
    pub fn open(config: EmbeddedConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.path)
            .map_err(|e| StoreError::Io(format!("create store folder {}: {e}", config.path.display())))?;
        let db = Database::create(config.path.join(RECORDS_FILE)).map_err(redb_err("open"))?;
        let Meta { layout, dimension: stored_dimension, next_slot, generation } = Self::read_meta(&db)?;
        if let (Some(configured), Some(stored)) = (config.dimension, stored_dimension) {
            if configured != stored {
                return Err(StoreError::SchemaMismatch(format!(
                    "store {} holds {stored}-dimensional vectors, configured for {configured}",
                    config.path.display()
                )));
            }
        }
        let dimension = stored_dimension.or(config.dimension);
        let vectors = OnceLock::new();
        if let Some(dimension) = dimension {
            let file = VectorFile::open(&config.path.join(VECTORS_FILE), dimension, generation)?;
            if layout == 1 {
                Self::move_layout_1(&db, &file)?;
            }
            let _ = vectors.set(file);
        } else if layout == 1 {
            Self::set_layout(&db)?;
        }
        let mut state =
            State { dimension, catalog: Catalog::default(), graphs: None, pending: Pending::default(), next_slot };
        let (recovery, unreadable) = Self::recover(&db, &config, generation, vectors.get(), &mut state)?;
        let quarantined = Self::quarantine(&db, unreadable)?;
        // A rebuilt or reconciled graph differs from its saved file: all are saved next time.
        let unsaved = match recovery {
            IndexRecovery::Loaded { added, removed } => (added + removed) as u64,
            IndexRecovery::Rebuilt => state.catalog.len().max(1) as u64,
            IndexRecovery::Empty => 0,
        };
        let inner = Arc::new(Inner {
            config,
            db,
            state: RwLock::new(state),
            writer: Mutex::new(()),
            changes: [unsaved; 3].map(AtomicU64::new),
            saved_at: Mutex::new(Instant::now()),
            recovery,
            vectors,
            generation,
            quarantined,
        });
        let background = Background::start(&inner)?;
        Ok(EmbeddedStore { inner, _background: Arc::new(background) })
    }

    pub async fn open_async(config: EmbeddedConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::open(config))
            .await
            .map_err(|e| StoreError::Io(format!("open task: {e}")))?
    }

    pub fn recovery(&self) -> IndexRecovery {
        self.inner.recovery
    }

    fn read_meta(db: &Database) -> Result<Meta> {
        let txn = begin_durable(db)?;
        let meta = {
            let mut meta = txn.open_table(META).map_err(redb_err("open meta"))?;
            txn.open_table(RECORDS).map_err(redb_err("open records"))?;
            let get = |meta: &redb::Table<&str, u64>, key| meta.get(key).map(|v| v.map(|g| g.value()));
            let layout = match get(&meta, META_SCHEMA).map_err(redb_err("read meta"))? {
                Some(version @ (1 | SCHEMA_VERSION)) => version,
                Some(other) => {
                    return Err(StoreError::SchemaMismatch(format!(
                        "store layout version {other}, this build reads versions 1 and {SCHEMA_VERSION}"
                    )))
                }
                None => {
                    meta.insert(META_SCHEMA, SCHEMA_VERSION).map_err(redb_err("write meta"))?;
                    SCHEMA_VERSION
                }
            };
            let generation = match get(&meta, META_GENERATION).map_err(redb_err("read meta"))? {
                Some(generation) => generation,
                None => {
                    let generation = new_generation();
                    meta.insert(META_GENERATION, generation).map_err(redb_err("write meta"))?;
                    generation
                }
            };
            Meta {
                layout,
                dimension: get(&meta, META_DIMENSION).map_err(redb_err("read meta"))?.map(|d| d as usize),
                next_slot: get(&meta, META_NEXT_SLOT).map_err(redb_err("read meta"))?.unwrap_or(0),
                generation,
            }
        };
        txn.commit().map_err(redb_err("commit meta"))?;
        Ok(meta)
    }

    /// Moves a layout-1 store to layout 2: each record's vectors are appended to the vector
    /// file (fsync'ed) and the record rewritten without them, `LAYOUT_MOVE_BATCH` records per
    /// transaction, each moved record leaving the old table in the same transaction. A crash
    /// midway leaves some records moved and the rest in the old table (the next open moves
    /// those) plus, at worst, vectors no record names. A value that cannot be read as layout 1
    /// is moved unchanged and quarantined by the open as any unreadable value.
    fn move_layout_1(db: &Database, vectors: &VectorFile) -> Result<()> {
        let mut moved_in_all = 0;
        loop {
            let txn = begin_durable(db)?;
            let moved = {
                let mut old = txn.open_table(LAYOUT_1_RECORDS).map_err(redb_err("open layout-1 records"))?;
                let mut new = txn.open_table(RECORDS).map_err(redb_err("open records"))?;
                let mut batch = Vec::new();
                for entry in old.iter().map_err(redb_err("scan layout-1 records"))?.take(LAYOUT_MOVE_BATCH) {
                    let (key, value) = entry.map_err(redb_err("scan layout-1 records"))?;
                    batch.push((key.value().to_owned(), value.value().to_vec()));
                }
                // Only what the vector file can hold moves: vectors of its dimension.
                let movable: Vec<Option<(u64, ImageRecord)>> = batch
                    .iter()
                    .map(|(_, bytes)| {
                        codec::decode_layout_1(bytes)
                            .ok()
                            .filter(|(_, record)| record_vectors(record).all(|v| v.len() == vectors.dimension()))
                    })
                    .collect();
                let mut first =
                    vectors.append(movable.iter().flatten().flat_map(|(_, record)| record_vectors(record)))?;
                for ((key, bytes), movable) in batch.iter().zip(movable) {
                    let value = match movable {
                        Some((slot, record)) => {
                            let value = codec::encode(slot, first, &record);
                            first += codec::vector_count(&record) as u64;
                            value
                        }
                        None => bytes.clone(),
                    };
                    new.insert(key.as_str(), value.as_slice()).map_err(redb_err("move record"))?;
                    old.remove(key.as_str()).map_err(redb_err("move record"))?;
                }
                batch.len()
            };
            txn.commit().map_err(redb_err("commit moved records"))?;
            moved_in_all += moved;
            if moved < LAYOUT_MOVE_BATCH {
                break;
            }
        }
        tracing::info!(records = moved_in_all, "store moved to layout {SCHEMA_VERSION} (vectors in {VECTORS_FILE})");
        Self::set_layout(db)
    }

    fn set_layout(db: &Database) -> Result<()> {
        let txn = begin_durable(db)?;
        txn.delete_table(LAYOUT_1_RECORDS).map_err(redb_err("drop layout-1 records"))?;
        txn.open_table(META)
            .map_err(redb_err("open meta"))?
            .insert(META_SCHEMA, SCHEMA_VERSION)
            .map_err(redb_err("write meta"))?;
        txn.commit().map_err(redb_err("commit layout"))
    }

    /// Fills the catalog from the records and brings the graphs in line with them, or leaves
    /// the vectors they lack in `state.pending` (see `background_replay_max_vectors`).
    /// Records that cannot be served ([`servable`], [`with_vectors`]) are left out and
    /// returned. The saved graphs load on a second thread while the records are read: at a
    /// million images each takes seconds, and they need nothing from each other.
    fn recover(
        db: &Database,
        config: &EmbeddedConfig,
        generation: u64,
        vectors: Option<&VectorFile>,
        state: &mut State,
    ) -> Result<(IndexRecovery, Vec<Unreadable>)> {
        let (Some(dimension), Some(vectors)) = (state.dimension, vectors) else {
            return Ok((IndexRecovery::Empty, Vec::new()));
        };
        let (saved, read) = std::thread::scope(|scope| {
            let loading = std::thread::Builder::new()
                .name("store-load-graphs".into())
                .spawn_scoped(scope, || Graphs::load(config, dimension, generation))
                .map_err(|e| StoreError::Io(format!("start the graph loading thread: {e}")))?;
            let read = Self::read_records(db, vectors, state);
            let saved = loading.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            Ok::<_, StoreError>((saved, read))
        })?;
        let mut unreadable = read?;
        let (graphs, loaded) = match saved {
            Ok(graphs) => (graphs, true),
            Err(reason) => {
                tracing::info!(path = %config.path.display(), %reason, "saved graphs not used: rebuilding them");
                (Graphs::new(config, dimension)?, false)
            }
        };
        // Records with a vector that a graph lacks (all of them when rebuilding): read again
        // with their vectors and checked like `put` checks them. Inserted now when the graphs
        // were rebuilt or lack many; otherwise held back for the background catch-up.
        let images: Vec<(u64, &ImageEntry)> = state.catalog.entries().collect();
        let incomplete: Vec<(u64, Arc<str>, usize)> = images
            .par_iter()
            .filter(|(slot, image)| !graphs.hold(*slot, image))
            .map(|(slot, image)| (*slot, image.id.clone(), 1 + image.objects.len() + image.face_boxes.len()))
            .collect();
        drop(images);
        let vectors_missing: usize = incomplete.iter().map(|(_, _, count)| count).sum();
        let in_background = loaded && vectors_missing <= config.background_replay_max_vectors;
        let txn = db.begin_read().map_err(redb_err("begin read"))?;
        let table = txn.open_table(RECORDS).map_err(redb_err("open records"))?;
        let (mut added, mut held) = (0, [Vec::new(), Vec::new(), Vec::new()]);
        for batch in incomplete.chunks(RECOVERY_BATCH) {
            let mut complete = Vec::with_capacity(batch.len());
            for (slot, id, _) in batch {
                match with_vectors(&table, id, dimension, vectors)? {
                    Ok(record) => complete.push((*slot, record)),
                    Err(unservable) => {
                        state.catalog.remove(*slot);
                        unreadable.push(unservable);
                    }
                }
            }
            if in_background {
                added += complete.len();
                for (slot, record) in complete {
                    graphs.hold_back(slot, record, &mut state.pending, &mut held);
                }
            } else {
                added += graphs.add_all(&complete)?;
            }
        }
        for (graph, keys) in graphs.all().into_iter().zip(held) {
            graph.reserve(keys)?;
        }
        let mut removed = 0;
        if loaded {
            for slot in 0..state.next_slot {
                if state.catalog.image(slot).is_none() {
                    removed += graphs.remove_slot(slot)?.iter().sum::<u64>() as usize;
                }
            }
        }
        state.graphs = Some(graphs);
        let recovery = match (loaded, state.catalog.len()) {
            (_, 0) if !loaded => IndexRecovery::Empty,
            (true, _) => IndexRecovery::Loaded { added, removed },
            (false, _) => IndexRecovery::Rebuilt,
        };
        Ok((recovery, unreadable))
    }

    /// Puts every servable record into the catalog; returns the others.
    fn read_records(db: &Database, vectors: &VectorFile, state: &mut State) -> Result<Vec<Unreadable>> {
        let txn = db.begin_read().map_err(redb_err("begin read"))?;
        let table = txn.open_table(RECORDS).map_err(redb_err("open records"))?;
        state.catalog.reserve(table.len().map_err(redb_err("count records"))? as usize);
        let mut unreadable = Vec::new();
        for entry in table.iter().map_err(redb_err("scan records"))? {
            let (key, value) = entry.map_err(redb_err("scan records"))?;
            match servable(key.value(), value.value(), state, vectors) {
                Ok(stored) => state.catalog.insert(stored.slot, stored.first_vector, &stored.record),
                Err(reason) => {
                    unreadable.push(Unreadable { id: key.value().to_owned(), reason, bytes: value.value().to_vec() })
                }
            }
        }
        Ok(unreadable)
    }

    /// Moves `unreadable` from the records to the quarantine in one durable transaction and
    /// logs each; returns how many records the quarantine holds in all.
    fn quarantine(db: &Database, unreadable: Vec<Unreadable>) -> Result<usize> {
        let txn = begin_durable(db)?;
        let held = {
            let mut records = txn.open_table(RECORDS).map_err(redb_err("open records"))?;
            let mut quarantine = txn.open_table(QUARANTINE).map_err(redb_err("open quarantine"))?;
            let last = quarantine.last().map_err(redb_err("read quarantine"))?.map(|(key, _)| key.value());
            let first = last.map_or(0, |key| key + 1);
            for (number, entry) in (first..).zip(&unreadable) {
                records.remove(entry.id.as_str()).map_err(redb_err("quarantine record"))?;
                quarantine
                    .insert(number, (entry.id.as_str(), entry.reason.as_str(), entry.bytes.as_slice()))
                    .map_err(redb_err("quarantine record"))?;
            }
            quarantine.len().map_err(redb_err("read quarantine"))? as usize
        };
        txn.commit().map_err(redb_err("commit quarantine"))?;
        for Unreadable { id, reason, .. } in &unreadable {
            tracing::warn!(image_id = %id, %reason, "stored record quarantined: it cannot be served");
        }
        Ok(held)
    }
}

/// What a stored value holds, if it can be served: it decodes, is stored under its own id,
/// passes `put`'s checks of the header, names vectors that the vector file holds, and holds a
/// slot that the store handed out (below `next_slot`) and that no record read before holds.
/// Otherwise why not. The vectors are not read: those a loaded graph holds were checked when
/// they were put, and reading them all would make opening a million images a pass over
/// 13 GB ([`with_vectors`] reads the others).
fn servable(
    key: &str,
    bytes: &[u8],
    state: &State,
    vectors: &VectorFile,
) -> std::result::Result<codec::Stored, String> {
    let stored = codec::decode(bytes).map_err(|e| e.to_string())?;
    let codec::Stored { slot, first_vector, record } = &stored;
    if record.id != key {
        return Err(format!("stored under the key {key:?} but its id is {:?}", record.id));
    }
    check_header(record).map_err(|e| e.to_string())?;
    let count = stored.vector_count();
    if first_vector.checked_add(count as u64).is_none_or(|end| end > vectors.len()) {
        return Err(format!(
            "vectors {first_vector}..+{count} reach past the {} vectors of {VECTORS_FILE}",
            vectors.len()
        ));
    }
    if *slot >= state.next_slot {
        return Err(format!("slot {slot} was never handed out (the next one is {})", state.next_slot));
    }
    if let Some(holder) = state.catalog.image(*slot) {
        return Err(format!("slot {slot} is already held by image {:?}", holder.id));
    }
    Ok(stored)
}

/// The servable record stored under `id`, with its vectors, if they pass `put`'s checks;
/// otherwise what to quarantine. For records whose vectors a graph lacks.
fn with_vectors(
    table: &redb::ReadOnlyTable<&str, &[u8]>,
    id: &str,
    dimension: usize,
    vectors: &VectorFile,
) -> Result<std::result::Result<ImageRecord, Unreadable>> {
    let value = table
        .get(id)
        .map_err(redb_err("read record"))?
        .ok_or_else(|| StoreError::Io(format!("record store: image {id:?} vanished while the store was opening")))?;
    let bytes = value.value();
    let checked = codec::decode(bytes).and_then(|stored| complete_record(stored, vectors)).and_then(|record| {
        check_record(&record, Some(dimension))?;
        Ok(record)
    });
    Ok(checked.map_err(|e| Unreadable { id: id.to_owned(), reason: e.to_string(), bytes: bytes.to_vec() }))
}

/// The record of `stored` with its vectors, read from the vector file.
fn complete_record(stored: codec::Stored, vectors: &VectorFile) -> Result<ImageRecord> {
    let count = stored.vector_count();
    let mut record = stored.record;
    codec::fill_vectors(&mut record, vectors.read(stored.first_vector, count)?);
    Ok(record)
}

/// A write transaction that is on disk when its commit returns. It also saves redb's
/// allocator state with the commit (quick repair), so that the open after a kill -9 does not
/// walk the whole records file to rebuild it (3 s at a million images); the commit costs an
/// extra fsync.
fn begin_durable(db: &Database) -> Result<redb::WriteTransaction> {
    let mut txn = db.begin_write().map_err(redb_err("begin write"))?;
    txn.set_durability(Durability::Immediate);
    txn.set_quick_repair(true);
    Ok(txn)
}

/// The vectors of a record in the order the vector file keeps them: image, objects, faces.
fn record_vectors(record: &ImageRecord) -> impl Iterator<Item = &[f32]> {
    std::iter::once(&record.embedding[..])
        .chain(record.objects.iter().map(|o| &o.embedding[..]))
        .chain(record.faces.iter().map(|f| &f.embedding[..]))
}

/// A generation for a new records database: the standard library's random hash keys (drawn
/// from the operating system once per process) over the time and the process id.
fn new_generation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

/// A poisoned lock only means another thread panicked while holding it; the state is
/// changed in steps that each leave it usable, so carry on.
fn read(lock: &RwLock<State>) -> RwLockReadGuard<'_, State> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write(lock: &RwLock<State>) -> RwLockWriteGuard<'_, State> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    fn put_batch(&self, records: Vec<ImageRecord>) -> Result<Vec<Result<PutOutcome>>> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let (mut dimension, mut next_slot) = {
            let state = read(&self.state);
            (state.dimension, state.next_slot)
        };
        let mut outcomes = Vec::with_capacity(records.len());
        let mut created: Vec<(u64, ImageRecord)> = Vec::new();
        // Index of each created record's first vector in the vector file.
        let mut firsts = Vec::new();
        let txn = begin_durable(&self.db)?;
        {
            let mut table = txn.open_table(RECORDS).map_err(redb_err("open records"))?;
            let mut batch_ids = std::collections::HashSet::new();
            for record in records {
                let dim = match check_record(&record, dimension) {
                    Ok(dim) => dim,
                    Err(e) => {
                        outcomes.push(Err(e));
                        continue;
                    }
                };
                dimension = Some(dim);
                let stored = table.get(record.id.as_str()).map_err(redb_err("read record"))?.is_some();
                if stored || !batch_ids.insert(record.id.clone()) {
                    outcomes.push(Ok(PutOutcome::AlreadyStored));
                    continue;
                }
                created.push((next_slot, record));
                next_slot += 1;
                outcomes.push(Ok(PutOutcome::Created));
            }
            if let Some(dim) = dimension.filter(|_| !created.is_empty()) {
                // The vectors are on disk before the records naming them commit.
                let vectors = self.vector_file(dim)?;
                let mut first = vectors.append(created.iter().flat_map(|(_, record)| record_vectors(record)))?;
                for (slot, record) in &created {
                    table
                        .insert(record.id.as_str(), codec::encode(*slot, first, record).as_slice())
                        .map_err(redb_err("write record"))?;
                    firsts.push(first);
                    first += codec::vector_count(record) as u64;
                }
            }
            let mut meta = txn.open_table(META).map_err(redb_err("open meta"))?;
            meta.insert(META_NEXT_SLOT, next_slot).map_err(redb_err("write meta"))?;
            if let Some(dim) = dimension {
                meta.insert(META_DIMENSION, dim as u64).map_err(redb_err("write meta"))?;
            }
        }
        if created.is_empty() {
            txn.abort().map_err(redb_err("abort"))?;
            return Ok(outcomes);
        }
        // The records are durable once this returns; only then do searches see them.
        txn.commit().map_err(redb_err("commit"))?;

        {
            // Exclusive only for the room in the graphs (and the catalog below): searches
            // wait for this, not for the inserts.
            let mut state = write(&self.state);
            state.dimension = dimension;
            state.next_slot = next_slot;
            if state.graphs.is_none() {
                let dim = dimension.expect("a created record fixed the dimension");
                state.graphs = Some(Graphs::new(&self.config, dim)?);
            }
            state.graphs.as_ref().expect("created above").reserve_for(&created)?;
        }
        let added = read(&self.state).graphs.as_ref().expect("created above").add_reserved(&created);
        // Into the catalog only once the adds are over (the records are stored whatever
        // they returned): exact scans read the vectors of catalogued keys from the graph,
        // and reading one while usearch adds it can read through a null pointer (see
        // `ranked`). Until then searches skip them.
        let mut state = write(&self.state);
        for ((slot, record), first) in created.iter().zip(&firsts) {
            state.catalog.insert(*slot, *first, record);
        }
        drop(state);
        added?;
        let parts = |count: fn(&ImageRecord) -> usize| created.iter().map(|(_, r)| count(r) as u64).sum::<u64>();
        self.changes[Kind::Image as usize].fetch_add(created.len() as u64, Ordering::Relaxed);
        self.changes[Kind::Object as usize].fetch_add(parts(|r| r.objects.len()), Ordering::Relaxed);
        self.changes[Kind::Face as usize].fetch_add(parts(|r| r.faces.len()), Ordering::Relaxed);
        Ok(outcomes)
    }

    /// The vector file, opened (created) at the first put into a store of unknown dimension.
    fn vector_file(&self, dimension: usize) -> Result<&VectorFile> {
        if self.vectors.get().is_none() {
            let file = VectorFile::open(&self.config.path.join(VECTORS_FILE), dimension, self.generation)?;
            // Only the writer gets here, holding the writer lock: no other set can win.
            let _ = self.vectors.set(file);
        }
        Ok(self.vectors.get().expect("set above"))
    }

    fn delete(&self, image_id: &str) -> Result<bool> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let txn = begin_durable(&self.db)?;
        let slot = {
            let mut table = txn.open_table(RECORDS).map_err(redb_err("open records"))?;
            let removed = table.remove(image_id).map_err(redb_err("delete record"))?;
            match removed {
                Some(value) => codec::decode_slot(value.value())?,
                None => return Ok(false),
            }
        };
        txn.commit().map_err(redb_err("commit"))?;
        write(&self.state).catalog.remove(slot);
        let state = read(&self.state);
        if let Some(graphs) = &state.graphs {
            let removed = graphs.remove_slot(slot)?;
            for (changes, removed) in self.changes.iter().zip(removed) {
                changes.fetch_add(removed, Ordering::Relaxed);
            }
        }
        Ok(true)
    }

    fn get(&self, image_id: &str) -> Result<Option<ImageRecord>> {
        Ok(self.get_many(&[image_id])?.pop().flatten())
    }

    /// The records of several ids from one read transaction, in order.
    fn get_many(&self, image_ids: &[&str]) -> Result<Vec<Option<ImageRecord>>> {
        let txn = self.db.begin_read().map_err(redb_err("begin read"))?;
        let table = txn.open_table(RECORDS).map_err(redb_err("open records"))?;
        let mut records = Vec::with_capacity(image_ids.len());
        for image_id in image_ids {
            let Some(value) = table.get(*image_id).map_err(redb_err("read record"))? else {
                records.push(None);
                continue;
            };
            let vectors = self.vectors.get().ok_or_else(|| StoreError::Io("a record without a vector file".into()))?;
            records.push(Some(complete_record(codec::decode(value.value())?, vectors)?));
        }
        Ok(records)
    }

    /// Image hits from ranked (id, cosine) pairs: each record read once (one transaction),
    /// its vectors left out, its matched object chosen. An image deleted since the ranking
    /// is left out.
    fn image_hits(&self, ranked: Vec<(String, f32)>, query: &[f32], filter: &SearchFilter) -> Result<Vec<ImageHit>> {
        let ids: Vec<&str> = ranked.iter().map(|(id, _)| id.as_str()).collect();
        let records = self.get_many(&ids)?;
        Ok(ranked
            .iter()
            .zip(records)
            .filter_map(|((image_id, score), record)| {
                let record = record?;
                Some(ImageHit {
                    image_id: image_id.clone(),
                    score: *score,
                    width: record.width,
                    height: record.height,
                    created_at: record.created_at,
                    matched_object: matching::best_object(&record.objects, query, filter),
                    objects: record.objects.iter().map(matching::summary).collect(),
                    tags: record.tags,
                    metadata: record.metadata,
                })
            })
            .collect())
    }

    /// Ranks candidates scored with a compact encoding by their true cosine: the best
    /// `rescore_factor * max(offset + k, 10)` by the approximate score are scored again with
    /// their f32 vectors from the vector file, then paged.
    fn rescore(
        &self,
        state: &State,
        kind: Kind,
        query: &[f32],
        mut approximate: Vec<(u64, f32)>,
        page: Page,
    ) -> Result<Vec<(u64, f32)>> {
        let rescored = (page.offset + page.k).max(10) * self.config.rescore_factor.max(1);
        if approximate.len() > rescored {
            approximate.select_nth_unstable_by(rescored, |a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            approximate.truncate(rescored);
        }
        let Some(vectors) = self.vectors.get() else { return Ok(Vec::new()) };
        let located: Vec<(u64, u64)> = approximate
            .into_iter()
            .filter_map(|(key, _)| {
                let (slot, part) = if kind == Kind::Image { (key, 0) } else { split_part_key(key) };
                let image = state.catalog.image(slot)?;
                let position = match kind {
                    Kind::Image => 0,
                    Kind::Object => 1 + part,
                    Kind::Face => 1 + image.objects.len() + part,
                };
                Some((key, image.first_vector + position as u64))
            })
            .collect();
        vectors.prefetch(located.iter().map(|(_, index)| *index));
        let mut exact = Vec::with_capacity(located.len());
        for (key, index) in located {
            exact.push((key, cosine(query, &vectors.read(index, 1)?[0])));
        }
        Ok(rank(exact, page))
    }

    /// Saves the graphs changed since their last save next to the records (write to a
    /// temporary file, fsync, rename), so that the next open loads them instead of
    /// rebuilding. Writers wait meanwhile; searches do not.
    fn checkpoint(&self) -> Result<()> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let state = read(&self.state);
        let Some(graphs) = state.graphs.as_ref() else { return Ok(()) };
        for ((graph, name), changes) in graphs.all().into_iter().zip(GRAPH_FILES).zip(&self.changes) {
            let path = self.config.path.join(name);
            // An unchanged graph is saved anyway when its files are missing (a graph that
            // never held a vector): the next open loads all three or rebuilds all three.
            if changes.load(Ordering::Relaxed) == 0 && graph.is_saved_at(&path) {
                continue;
            }
            graph.save(&path, self.generation)?;
        }
        std::fs::File::open(&self.config.path)
            .and_then(|dir| dir.sync_all())
            .map_err(|e| StoreError::Io(format!("fsync {}: {e}", self.config.path.display())))?;
        // The writer lock is held: nothing changed the graphs since they were saved.
        self.changes.iter().for_each(|changes| changes.store(0, Ordering::Relaxed));
        *self.saved_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        Ok(())
    }

    /// Rebuilds each graph whose removed or reused nodes passed their share
    /// (`compact_removed_fraction`, `compact_reused_fraction`) from the vectors it holds
    /// (decoding the graph's encoding and encoding again loses nothing: i8 and f16 values
    /// come back the same). Writers wait meanwhile; searches use the old graph until the new
    /// one replaces it. Returns how many graphs.
    fn compact(&self) -> Result<usize> {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut compacted = 0;
        for kind in [Kind::Image, Kind::Object, Kind::Face] {
            let fresh = {
                let state = read(&self.state);
                let Some(graphs) = &state.graphs else { return Ok(0) };
                let graph = graphs.all()[kind as usize];
                if !self.needs_compaction(graph) {
                    continue;
                }
                let (removed, reused) = (graph.removed(), graph.reused());
                let mut keys: Vec<u64> = state
                    .catalog
                    .entries()
                    .flat_map(|(slot, image)| {
                        let parts = match kind {
                            Kind::Image => return vec![slot],
                            Kind::Object => image.objects.len(),
                            Kind::Face => image.face_boxes.len(),
                        };
                        (0..parts).map(|i| part_key(slot, i)).collect()
                    })
                    .collect();
                let fresh = VectorIndex::new(
                    graph.dimension(),
                    self.config.hnsw_of(kind),
                    self.config.encoding,
                    self.config.shards_of(kind),
                )?;
                // In key order, so that the same vectors give the same graph.
                keys.par_sort_unstable();
                fresh.reserve(keys.iter().copied())?;
                for batch in keys.chunks(COMPACTION_BATCH) {
                    let held: Vec<(u64, Vec<f32>)> = batch
                        .par_iter()
                        .filter_map(|&key| {
                            let mut vector = vec![0.0f32; graph.dimension()];
                            graph.vector(key, &mut vector).then_some((key, vector))
                        })
                        .collect();
                    // Each shard by one thread, the shards in parallel.
                    let adds = fresh.adds(held.iter().map(|(key, vector)| (*key, &vector[..])).collect());
                    adds.into_par_iter().try_for_each(vectors::ShardAdds::run)?;
                }
                tracing::info!(graph = ?kind, removed, reused, kept = fresh.len(), "graph compacted");
                fresh
            };
            let mut state = write(&self.state);
            let graphs = state.graphs.as_mut().expect("checked above");
            // The whole graph changed: saved at the next checkpoint.
            self.changes[kind as usize].fetch_add(fresh.len().max(1) as u64, Ordering::Relaxed);
            *graphs.get_mut(kind) = fresh;
            compacted += 1;
        }
        Ok(compacted)
    }

    /// Whether `graph`'s removed nodes passed `compact_removed_fraction` of its nodes, or its
    /// reused nodes `compact_reused_fraction` of its vectors.
    fn needs_compaction(&self, graph: &VectorIndex) -> bool {
        let (removed, reused) = (graph.removed(), graph.reused());
        let config = &self.config;
        (removed > 0 && removed as f32 >= config.compact_removed_fraction * (graph.len() + removed) as f32)
            || (config.compact_reused_fraction > 0.0
                && reused > 0
                && reused as f32 >= config.compact_reused_fraction * graph.len() as f32)
    }

    /// Whether a graph needs compacting; looks without the writer lock, so the background
    /// thread does not queue behind a batch just to find nothing to do.
    fn compaction_due(&self) -> bool {
        read(&self.state)
            .graphs
            .as_ref()
            .is_some_and(|graphs| graphs.all().into_iter().any(|g| self.needs_compaction(g)))
    }

    /// Inserts the pending vectors into the graphs, `RECOVERY_BATCH` per graph at a time,
    /// each batch leaving `pending` once the graphs hold it (a search meanwhile may see a
    /// vector in both; `ranked` keeps one). The caller holds the writer lock: puts, deletes
    /// and checkpoints wait, searches do not. Returns how many vectors, or early when `stop`
    /// says the store is closing: its graphs are then saved without the rest, which the
    /// next open finds missing again.
    fn catch_up(&self, stop: &dyn Fn() -> bool) -> Result<usize> {
        let mut inserted = 0;
        while !stop() {
            let batch_keys = {
                let state = read(&self.state);
                let Some(graphs) = &state.graphs else { break };
                let batch = state.pending.batch(RECOVERY_BATCH);
                if batch.iter().all(Vec::is_empty) {
                    break;
                }
                let keys = batch.each_ref().map(|vectors| vectors.iter().map(|(key, _)| *key).collect::<Vec<u64>>());
                graphs.add_keyed(batch)?;
                keys
            };
            let mut state = write(&self.state);
            for (kind, keys) in [Kind::Image, Kind::Object, Kind::Face].into_iter().zip(batch_keys) {
                inserted += keys.len();
                keys.into_iter().for_each(|key| state.pending.remove(kind, key));
            }
        }
        let mut state = write(&self.state);
        if state.pending.is_empty() {
            // Gives back the emptied maps' memory.
            state.pending = Pending::default();
        }
        Ok(inserted)
    }

    /// Whether the [`CheckpointPolicy`] asks for a save now.
    fn checkpoint_due(&self) -> bool {
        let policy = self.config.checkpoint;
        let changes: u64 = self.changes.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let by_count = policy.after_changes > 0 && changes >= policy.after_changes;
        let saved_at = *self.saved_at.lock().unwrap_or_else(|e| e.into_inner());
        let by_time = policy.interval.is_some_and(|interval| changes > 0 && saved_at.elapsed() >= interval);
        by_count || by_time
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Best effort: a failed save only means the next open replays more records.
        let _ = self.checkpoint();
    }
}

/// Ranked (key, cosine) pairs: best first, ties by key so pages are stable.
fn rank(mut scored: Vec<(u64, f32)>, page: Page) -> Vec<(u64, f32)> {
    scored.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().skip(page.offset).take(page.k).collect()
}

/// The three kinds of search differ only in which graph they use, which keys belong to a
/// candidate image and which keys pass the filter.
struct SearchPlan<'a> {
    kind: Kind,
    graph: &'a VectorIndex,
    scope: Scope,
    /// Appends the keys of the vectors of one image (slot, entry) that pass the filter.
    keys_of: &'a (dyn Fn(u64, &ImageEntry, &mut Vec<u64>) + Sync),
    keep: &'a (dyn Fn(u64) -> bool + Sync),
}

impl EmbeddedStore {
    /// Saves the vector graphs now (also done when the last clone is dropped); blocking.
    pub fn checkpoint(&self) -> Result<()> {
        self.inner.checkpoint()
    }

    /// Waits for a batch, checkpoint or catch-up in progress: usearch's memory count walks
    /// the graphs' nodes, which an add may be creating.
    pub fn graph_stats(&self) -> GraphStats {
        let _writer = self.inner.writer.lock().unwrap_or_else(|e| e.into_inner());
        let state = read(&self.inner.state);
        let unsaved_changes = self.inner.changes.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        let Some(graphs) = &state.graphs else { return GraphStats { unsaved_changes, ..GraphStats::default() } };
        GraphStats {
            vectors: graphs.all().map(VectorIndex::len),
            capacity: graphs.all().map(VectorIndex::capacity),
            memory_bytes: graphs.all().iter().map(|g| g.memory_bytes()).sum(),
            removed: graphs.all().map(VectorIndex::removed),
            reused: graphs.all().map(VectorIndex::reused),
            unsaved_changes,
        }
    }

    /// Vectors of stored records that the background catch-up after open has yet to insert
    /// into the graphs (searches score them exactly meanwhile); does not wait.
    pub fn pending_vectors(&self) -> usize {
        read(&self.inner.state).pending.len()
    }

    /// Rebuilds the graphs whose removed or reused nodes passed their share (also done
    /// by the background thread); returns how many. Blocking.
    pub fn compact(&self) -> Result<usize> {
        self.inner.compact()
    }

    /// Ids of every stored image, oldest first (for tools that read a whole store).
    pub fn image_ids(&self) -> Vec<String> {
        let state = read(&self.inner.state);
        (0..state.next_slot).filter_map(|slot| state.catalog.image(slot)).map(|image| image.id.to_string()).collect()
    }

    fn image_search(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<ImageHit>> {
        let ranked = self.search(query, filter, page, |state, resolved, run| {
            let keys_of = |slot, _: &ImageEntry, keys: &mut Vec<u64>| keys.push(slot);
            let keep = |slot| state.catalog.image_matches(resolved, slot, Scope::Image);
            let ranked = run(SearchPlan {
                kind: Kind::Image,
                graph: &state.graphs.as_ref().expect("checked").images,
                scope: Scope::Image,
                keys_of: &keys_of,
                keep: &keep,
            })?;
            Ok(ranked
                .into_iter()
                .filter_map(|(slot, score)| Some((state.catalog.image(slot)?.id.to_string(), score)))
                .collect())
        })?;
        self.inner.image_hits(ranked, query, filter)
    }

    fn object_search(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<ObjectHit>> {
        self.search(query, filter, page, |state, resolved, run| {
            let keys_of = |slot, image: &ImageEntry, keys: &mut Vec<u64>| {
                let matching = image.objects.iter().enumerate().filter(|(_, o)| resolved.object_matches(o));
                keys.extend(matching.map(|(i, _)| part_key(slot, i)));
            };
            let keep = |key| {
                let (slot, index) = split_part_key(key);
                state.catalog.image(slot).is_some_and(|image| {
                    resolved.image_matches(image, Scope::ImageOfObject)
                        && image.objects.get(index).is_some_and(|o| resolved.object_matches(o))
                })
            };
            let graph = &state.graphs.as_ref().expect("checked").objects;
            let plan =
                SearchPlan { kind: Kind::Object, graph, scope: Scope::ImageOfObject, keys_of: &keys_of, keep: &keep };
            let ranked = run(plan)?;
            Ok(ranked
                .into_iter()
                .filter_map(|(key, score)| {
                    let (slot, object_index) = split_part_key(key);
                    let image = state.catalog.image(slot)?;
                    let object = image.objects.get(object_index)?;
                    Some(ObjectHit {
                        image_id: image.id.to_string(),
                        object_index,
                        class_name: state.catalog.class_name(object.class).to_owned(),
                        confidence: object.confidence,
                        bbox: object.bbox,
                        score,
                        width: image.width,
                        height: image.height,
                    })
                })
                .collect())
        })
    }

    fn face_search(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<FaceHit>> {
        self.search(query, filter, page, |state, resolved, run| {
            let keys_of = |slot, image: &ImageEntry, keys: &mut Vec<u64>| {
                keys.extend((0..image.face_boxes.len()).map(|i| part_key(slot, i)));
            };
            let keep = |key| state.catalog.image_matches(resolved, split_part_key(key).0, Scope::Image);
            let graph = &state.graphs.as_ref().expect("checked").faces;
            let ranked =
                run(SearchPlan { kind: Kind::Face, graph, scope: Scope::Image, keys_of: &keys_of, keep: &keep })?;
            Ok(ranked
                .into_iter()
                .filter_map(|(key, score)| {
                    let (slot, face_index) = split_part_key(key);
                    let image = state.catalog.image(slot)?;
                    Some(FaceHit {
                        image_id: image.id.to_string(),
                        face_index,
                        bbox: *image.face_boxes.get(face_index)?,
                        score,
                        width: image.width,
                        height: image.height,
                    })
                })
                .collect())
        })
    }

    fn search<T>(
        &self,
        query: &[f32],
        filter: &SearchFilter,
        page: Page,
        plan: impl for<'s> Fn(
            &'s State,
            &'s ResolvedFilter,
            &dyn Fn(SearchPlan<'_>) -> Result<Vec<(u64, f32)>>,
        ) -> Result<Vec<T>>,
    ) -> Result<Vec<T>> {
        let state = read(&self.inner.state);
        check_query(query, filter, page, self.inner.config.limits, state.dimension)?;
        let (Some(_), Some(resolved)) = (state.graphs.as_ref(), state.catalog.resolve(filter)) else {
            return Ok(Vec::new());
        };
        let run = |search: SearchPlan<'_>| self.ranked(&state, &resolved, query, page, search);
        plan(&state, &resolved, &run)
    }

    /// Whether a filter passing `fraction` of a graph of `vectors` is answered by scanning
    /// its matches rather than through the graph: when they number at most
    /// `exact_scan_limit`, or at most `exact_scan_factor` times the vectors an in-graph
    /// search expects to test to collect `expansion_search` matches (that / fraction). The
    /// object graph's longer list is left out: it buys recall, not a costlier traversal.
    fn scan_is_cheaper(&self, fraction: f32, vectors: usize, want: usize) -> bool {
        let config = &self.inner.config;
        let matching = fraction * vectors as f32;
        let list = config.hnsw.expansion_search.max(want) as f32;
        matching <= config.exact_scan_limit as f32 || matching * fraction <= config.exact_scan_factor * list
    }

    fn ranked(
        &self,
        state: &State,
        filter: &ResolvedFilter,
        query: &[f32],
        page: Page,
        plan: SearchPlan<'_>,
    ) -> Result<Vec<(u64, f32)>> {
        let want = page.k + page.offset;
        // Scored with the graph's vectors (exact for f32, else rescored below), on every
        // core: a scan of a large filter's matches is the slowest search there is. Pending
        // vectors are scored below instead: the catch-up may be adding them, and usearch
        // 2.26 maps a key before it stores the vector, so reading one being added can read
        // through a null pointer.
        let scan = |images: Vec<(u64, &ImageEntry)>| {
            images
                .par_chunks(SCAN_CHUNK)
                .flat_map_iter(|images| {
                    let mut scorer = plan.graph.scorer(query);
                    let (mut keys, mut scored) = (Vec::new(), Vec::new());
                    for (slot, image) in images {
                        keys.clear();
                        (plan.keys_of)(*slot, image, &mut keys);
                        for &key in &keys {
                            if state.pending.contains(plan.kind, key) {
                                continue;
                            }
                            if let Some(score) = scorer.score(key) {
                                scored.push((key, score));
                            }
                        }
                    }
                    scored
                })
                .collect::<Vec<_>>()
        };
        // Vectors an open left pending while the graphs catch up: scored exactly and ranked
        // with what the graph paths below find, so that no stored record is missed.
        let pending =
            if state.pending.is_empty() { Vec::new() } else { state.pending.scored(plan.kind, query, plan.keep) };
        let ranked = |mut scored: Vec<(u64, f32)>| {
            if !pending.is_empty() {
                scored.extend_from_slice(&pending);
                // A vector the catch-up has just inserted may come from both.
                scored.sort_unstable_by_key(|(key, _)| *key);
                scored.dedup_by_key(|(key, _)| *key);
            }
            if plan.graph.encoding().is_exact() {
                Ok(rank(scored, page))
            } else {
                self.inner.rescore(state, plan.kind, query, scored, page)
            }
        };
        if plan.graph.len() == 0 && pending.is_empty() {
            return Ok(Vec::new());
        }
        match state.catalog.candidates(filter, plan.scope, self.inner.config.exact_scan_limit) {
            Candidates::Few(slots) => ranked(scan(slots)),
            // No single index is selective, but the matches in all are few (several
            // conditions together) or cheaper to scan than to traverse for: they are listed
            // and scanned, exactly.
            Candidates::Many { fraction } if self.scan_is_cheaper(fraction, plan.graph.len(), want) => {
                ranked(scan(state.catalog.all_matching(filter, plan.scope)))
            }
            Candidates::Many { fraction } => {
                let floor = self.inner.config.hnsw_of(plan.kind).expansion_search.max(want);
                let found = if filter.is_empty() && plan.scope == Scope::Image {
                    plan.graph.search(query, floor, None)?
                } else if fraction >= self.inner.config.in_graph_filter_fraction {
                    // Unfiltered object search comes here too, with a filter every object
                    // passes: it keeps the plain list.
                    let floor = if filter.is_empty() {
                        floor
                    } else {
                        floor * self.inner.config.filtered_expansion_factor.max(1)
                    };
                    // The traversal walks on through vectors that fail the filter until it
                    // holds `floor` that pass: about floor / fraction vectors when the
                    // filter is independent of the query, but up to the whole graph when
                    // the query's neighbourhood holds no match (a filter for dogs, a query
                    // among people). Past a budget of tests the filter gives way (every
                    // vector passes, so the search ends at once) and the exact scan of the
                    // matches answers instead: the worst case costs about twice that scan.
                    // Each shard of a graph collects `floor` matches of its own.
                    let matching = (fraction * plan.graph.len() as f32) as usize;
                    let per_result = IN_GRAPH_TESTS_PER_RESULT * plan.graph.shard_count();
                    let budget = (matching * IN_GRAPH_TESTS_PER_MATCH).max(floor * per_result);
                    let tests = AtomicUsize::new(0);
                    let keep = |key| tests.fetch_add(1, Ordering::Relaxed) >= budget || (plan.keep)(key);
                    let found = plan.graph.search(query, floor, Some(&keep))?;
                    if tests.load(Ordering::Relaxed) > budget {
                        Vec::new()
                    } else {
                        found
                    }
                } else {
                    // Post-filter: search unfiltered for about 1/f times the matches wanted,
                    // then keep those that pass.
                    let matches = want.max(10) * self.inner.config.rescore_factor.max(1);
                    let widened =
                        ((matches as f32 / fraction.max(1e-6)).ceil() as usize).clamp(floor, MAX_CANDIDATES.max(floor));
                    let mut found = plan.graph.search(query, widened, None)?;
                    found.retain(|(key, _)| (plan.keep)(*key));
                    found
                };
                if found.len() >= want || found.len() >= plan.graph.len() {
                    ranked(found)
                } else {
                    ranked(scan(state.catalog.all_matching(filter, plan.scope)))
                }
            }
        }
    }
}

/// Vectors a compaction decodes from the old graph at a time (32 MiB of f32 at 512-d).
const COMPACTION_BATCH: usize = 16_384;

/// Images per parallel piece of an exact scan.
const SCAN_CHUNK: usize = 1024;

/// Most candidates a post-filtered graph search considers before the exact fallback.
const MAX_CANDIDATES: usize = 16_384;
/// Filter tests an in-graph filtered search may make, per estimated matching vector and
/// (at least) per result wanted, before it gives way to the exact scan of the matches: a
/// test costs about what scanning one match does (a distance in the graph's encoding).
const IN_GRAPH_TESTS_PER_MATCH: usize = 2;
const IN_GRAPH_TESTS_PER_RESULT: usize = 64;

#[async_trait]
impl Store for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn ready(&self) -> Result<()> {
        Ok(())
    }

    fn quarantined(&self) -> usize {
        self.inner.quarantined
    }

    async fn put(&self, record: ImageRecord) -> Result<PutOutcome> {
        let mut outcomes = self.put_batch(vec![record]).await?;
        outcomes.pop().expect("one outcome per record")
    }

    async fn put_batch(&self, records: Vec<ImageRecord>) -> Result<Vec<Result<PutOutcome>>> {
        let inner = self.inner.clone();
        blocking(move || inner.put_batch(records)).await
    }

    async fn get(&self, image_id: &str) -> Result<Option<ImageRecord>> {
        let (inner, id) = (self.inner.clone(), image_id.to_owned());
        blocking(move || inner.get(&id)).await
    }

    async fn delete(&self, image_id: &str) -> Result<bool> {
        let (inner, id) = (self.inner.clone(), image_id.to_owned());
        blocking(move || inner.delete(&id)).await
    }

    async fn count(&self) -> Result<usize> {
        Ok(read(&self.inner.state).catalog.len())
    }

    // Graph searches and exact scans are CPU work: they run on the blocking pool, so a long
    // filtered scan never stalls the async workers serving other requests.
    async fn search_images(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<ImageHit>> {
        let (store, query, filter) = (self.clone(), query.to_vec(), filter.clone());
        blocking(move || store.image_search(&query, &filter, page)).await
    }

    async fn search_objects(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<ObjectHit>> {
        let (store, query, filter) = (self.clone(), query.to_vec(), filter.clone());
        blocking(move || store.object_search(&query, &filter, page)).await
    }

    async fn search_faces(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<FaceHit>> {
        let (store, query, filter) = (self.clone(), query.to_vec(), filter.clone());
        blocking(move || store.face_search(&query, &filter, page)).await
    }
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(|e| StoreError::Io(format!("storage task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, embedding: Vec<f32>) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            width: 4,
            height: 4,
            created_at: 0,
            tags: Vec::new(),
            metadata: serde_json::json!({}),
            embedding,
            objects: Vec::new(),
            faces: Vec::new(),
        }
    }

    #[test]
    fn image_ids_lists_stored_images_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let records = vec![record("b", vec![1.0, 0.0]), record("a", vec![0.0, 1.0]), record("c", vec![0.6, 0.8])];
        store.inner.put_batch(records).unwrap();
        store.inner.delete("a").unwrap();
        assert_eq!(store.image_ids(), ["b", "c"]);
    }

    #[test]
    fn a_filter_is_scanned_when_its_matches_cost_less_than_the_traversal() {
        let dir = tempfile::tempdir().unwrap();
        // expansion_search 128, factor 96: scanned while matches * share <= 12,288.
        let store = EmbeddedStore::open(EmbeddedConfig::new(dir.path())).unwrap();
        let million = 1_000_000;
        // 1% of a million: 10,000 matches, 100.
        assert!(store.scan_is_cheaper(0.01, million, 10));
        // 20%: 200,000 matches, 40,000.
        assert!(!store.scan_is_cheaper(0.2, million, 10));
        // 5% of 4 million objects: 200,000 matches, 10,000; 6%: 14,400.
        assert!(store.scan_is_cheaper(0.05, 4 * million, 10));
        assert!(!store.scan_is_cheaper(0.06, 4 * million, 10));
        // Under exact_scan_limit whatever the share.
        assert!(store.scan_is_cheaper(0.5, 9_000, 10));
        let store = EmbeddedStore::open(EmbeddedConfig {
            exact_scan_factor: 0.0,
            ..EmbeddedConfig::new(tempfile::tempdir().unwrap().path())
        })
        .unwrap();
        assert!(!store.scan_is_cheaper(0.01, million, 10));
    }
}
