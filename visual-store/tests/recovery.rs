//! Crash paths of the embedded store's saved graphs. The records in redb are the truth; the
//! three usearch graphs that `checkpoint` saves (temporary file, fsync, rename) are a cache
//! that `open` loads and reconciles key by key with the records, or rebuilds. These tests
//! leave the graph files as a crash or a damaged disk can leave them and check that open
//! neither fails nor serves wrong results:
//!
//! * kill -9 after a checkpoint and further puts and deletes: `Loaded` with exactly the
//!   records replayed and the vectors removed that the writer's operations imply;
//! * a missing, empty, truncated, random or foreign (other dimension, or another store of
//!   the same dimension and ids) file in place of a graph, and graphs under a replaced
//!   records database: `Rebuilt` (a saved graph carries its records' generation);
//! * a crash inside a checkpoint (some graphs renamed from the newer checkpoint, the others
//!   from the older one, a partial or complete `*.tmp` left behind), built from two real
//!   checkpoints, and caught for real by killing a writer that checkpoints in a loop;
//! * a batch put and a rebuild (both insert many vectors at once) reach every vector.
//!
//! After every open, image, object and face searches (unfiltered and with filters) must equal
//! a brute-force reference over the surviving records: same ids, scores within 1e-5. Every
//! search goes through the graphs (`exact_scan_limit` 0) with a candidate list larger than
//! any graph, so the HNSW search visits every reachable vector and equality is sound.
//!
//! Expected counts follow `recover`: `added` counts records (one missing any vector from any
//! graph is replayed whole; keys already present are skipped), `removed` counts vectors (the
//! image, objects and faces of a deleted slot that a loaded graph still held).
//!
//! The writer is this test binary run again with `RECOVERY_WRITER` naming a script (as in
//! crash.rs): it prints `CHECKPOINT <n> <hashes of the three files>` after each checkpoint
//! and `DONE` at the end, then waits, so the kill is a real SIGKILL: no destructor runs and
//! no checkpoint on drop.

mod common;

use std::collections::BTreeSet;
use std::hash::Hasher;
use std::io::{BufRead, BufReader, Lines};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use visual_store::embedded::{CheckpointPolicy, EmbeddedConfig, EmbeddedStore, HnswParams, IndexRecovery};
use visual_store::{FaceRecord, ImageRecord, ObjectRecord, Page, PutOutcome, SearchFilter, Store};

const WRITER_ENV: &str = "RECOVERY_WRITER";
const WRITER_DIR_ENV: &str = "RECOVERY_WRITER_DIR";
/// Folder where the writer copies the graph files of each checkpoint (optional).
const WRITER_SNAPSHOTS_ENV: &str = "RECOVERY_WRITER_SNAPSHOTS";

const RECORDS_FILE: &str = "records.redb";
const VECTORS_FILE: &str = "vectors.f32";
const GRAPH_FILES: [&str; 3] = ["images.usearch", "objects.usearch", "faces.usearch"];

/// Images stored before the first checkpoint.
const INITIAL: usize = 240;
/// Documents the scripts draw from (index = slot: each is put once, in order).
const POOL: usize = 400;
/// Candidate list of every search: more than the vectors of any graph (asserted).
const EF: usize = 2048;
const K: usize = 10;

fn config(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig {
        exact_scan_limit: 0,
        exact_scan_factor: 0.0,
        hnsw: HnswParams { expansion_search: EF, ..HnswParams::default() },
        // The scripts decide when graphs are saved: the expected recovery counts follow.
        checkpoint: CheckpointPolicy::MANUAL,
        // The crash scripts follow each graph's file; every shard of a sharded graph is saved
        // the same way, and the tests of `sharded` cover what sharding adds.
        object_graph_shards: 1,
        ..EmbeddedConfig::new(dir)
    }
}

/// `config` with the object graph in `OBJECT_SHARDS` shards.
fn sharded(dir: &Path) -> EmbeddedConfig {
    EmbeddedConfig { object_graph_shards: OBJECT_SHARDS, ..config(dir) }
}

const OBJECT_SHARDS: usize = 2;

/// The saved graph files in `dir` (shards included), sorted.
fn graph_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".usearch"))
        .collect();
    names.sort();
    names
}

/// `POOL` records with 2 to 4 objects and 1 to 3 faces each.
fn documents() -> Vec<ImageRecord> {
    let docs = records(POOL, 31);
    let objects: usize = docs.iter().map(|d| d.objects.len()).sum();
    let faces: usize = docs.iter().map(|d| d.faces.len()).sum();
    assert!(objects.max(faces).max(POOL) < EF, "searches would not be exhaustive");
    docs
}

/// `count` records with 2 to 4 objects and 1 to 3 faces each, ids `rec-0000` on.
fn records(count: usize, seed: u64) -> Vec<ImageRecord> {
    let mut rng = common::Rng::new(seed);
    (0..count)
        .map(|i| {
            let objects = (0..2 + rng.below(3))
                .map(|_| {
                    let class = rng.below(common::CLASSES.len());
                    let x = rng.unit() * 500.0;
                    ObjectRecord {
                        class_id: class as u32,
                        class_name: common::CLASSES[class].into(),
                        confidence: (rng.unit() * 100.0).round() / 100.0,
                        bbox: [x, 10.0, x + 50.0, 90.0],
                        embedding: rng.unit_vector(common::DIMENSION),
                    }
                })
                .collect();
            let faces = (0..1 + rng.below(3))
                .map(|f| FaceRecord {
                    confidence: 0.9,
                    bbox: [f as f32, 2.0, 30.0, 40.0],
                    landmarks: [[5.0, 6.0]; 5],
                    embedding: rng.unit_vector(common::DIMENSION),
                })
                .collect();
            let tags = ["beach", "city", "night"].iter().filter(|_| rng.below(2) == 0).map(|t| t.to_string()).collect();
            ImageRecord {
                id: format!("rec-{i:04}"),
                width: 640,
                height: 480,
                created_at: common::BASE_TIME + i as i64 * 3600,
                tags,
                metadata: serde_json::json!({ "n": i }),
                embedding: rng.unit_vector(common::DIMENSION),
                objects,
                faces,
            }
        })
        .collect()
}

/// One step of a writer's script.
#[derive(Clone, Debug)]
enum Op {
    Put(Vec<usize>),
    Delete(usize),
    Checkpoint,
}

/// Checkpoint, then puts and deletes of records from before and after it.
fn after_checkpoint() -> Vec<Op> {
    let mut ops = vec![Op::Put((0..INITIAL).collect()), Op::Checkpoint];
    ops.extend((0..INITIAL).step_by(23).map(Op::Delete)); // 11 from before the checkpoint
    ops.push(Op::Put((240..270).collect()));
    ops.push(Op::Put(vec![270]));
    ops.push(Op::Put(vec![271]));
    ops.extend([245, 250, 271].map(Op::Delete)); // 3 from after it
    ops.push(Op::Delete(101));
    ops.push(Op::Put((272..280).collect()));
    ops
}

/// `after_checkpoint`, a second checkpoint, then more of the same.
fn two_checkpoints() -> Vec<Op> {
    let mut ops = after_checkpoint();
    ops.push(Op::Checkpoint);
    ops.extend([1, 2, 241, 272].map(Op::Delete));
    ops.push(Op::Put((280..300).collect()));
    ops.push(Op::Delete(290));
    ops
}

/// Small changes, each followed by a checkpoint, until the pool runs out: a kill at a random
/// moment often lands inside `checkpoint`.
fn checkpoint_loop() -> Vec<Op> {
    let mut ops = vec![Op::Put((0..INITIAL).collect()), Op::Checkpoint];
    for i in 0..INITIAL / 3 {
        let first = INITIAL + 2 * i;
        ops.push(Op::Put(vec![first, first + 1]));
        ops.push(Op::Delete(3 * i)); // in every checkpoint so far
        ops.push(Op::Delete(first + 1)); // in none
        if i % 2 == 1 {
            ops.push(Op::Delete(first - 2)); // in the previous checkpoint only
        }
        ops.push(Op::Checkpoint);
    }
    ops
}

/// Puts in batches of 10 and a few deletes, with no checkpoint of its own: only the
/// background saves of [`writer_config`] keep the graphs on disk.
fn background() -> Vec<Op> {
    let mut ops: Vec<Op> = (0..INITIAL).step_by(10).map(|first| Op::Put((first..first + 10).collect())).collect();
    ops.extend([3, 77, 150, 239].map(Op::Delete));
    ops
}

/// Vectors changed before a save by count; every record has at least 4 (image, 2 objects,
/// a face), so fewer than `(COUNT_POLICY + one batch) / 4` records can be left to replay.
const COUNT_POLICY: u64 = 200;

/// The writer's store: background saves only for the background scripts (by time or by
/// count of changes), and the scripts' own checkpoints only for the others.
fn writer_config(dir: &Path, script: &str) -> EmbeddedConfig {
    let checkpoint = match script {
        "background-time" => CheckpointPolicy { after_changes: 0, interval: Some(Duration::from_millis(100)) },
        "background-count" => CheckpointPolicy { after_changes: COUNT_POLICY, interval: None },
        _ => CheckpointPolicy::MANUAL,
    };
    EmbeddedConfig { checkpoint, ..config(dir) }
}

fn script(name: &str) -> Vec<Op> {
    match name {
        "after-checkpoint" => after_checkpoint(),
        "two-checkpoints" => two_checkpoints(),
        "checkpoint-loop" => checkpoint_loop(),
        "background-time" | "background-count" => background(),
        other => panic!("no script {other}"),
    }
}

/// The stored documents at every point of a script: `states[j]` after `j` operations, with the
/// number of checkpoints completed by then; `checkpoints[n]` is what checkpoint `n` saved.
struct Trace {
    states: Vec<(usize, BTreeSet<usize>)>,
    checkpoints: Vec<BTreeSet<usize>>,
}

impl Trace {
    fn of(ops: &[Op]) -> Trace {
        let mut alive = BTreeSet::new();
        let mut next_slot = 0;
        let mut trace = Trace { states: vec![(0, BTreeSet::new())], checkpoints: Vec::new() };
        for op in ops {
            match op {
                Op::Put(batch) => {
                    // The slot of a document is its index: puts take the pool in order.
                    assert_eq!(
                        *batch,
                        (next_slot..next_slot + batch.len()).collect::<Vec<_>>(),
                        "script puts out of order"
                    );
                    next_slot += batch.len();
                    alive.extend(batch);
                }
                Op::Delete(i) => assert!(alive.remove(i), "script deletes {i}, which is not stored"),
                Op::Checkpoint => trace.checkpoints.push(alive.clone()),
            }
            trace.states.push((trace.checkpoints.len(), alive.clone()));
        }
        trace
    }

    fn last(&self) -> &BTreeSet<usize> {
        &self.states.last().expect("the initial state").1
    }
}

/// What `open` must report for graph files saved when `graphs` (images, objects, faces) were
/// stored (`None`: a file that cannot be loaded), given the records that survive.
fn expected_recovery(
    docs: &[ImageRecord],
    graphs: [Option<&BTreeSet<usize>>; 3],
    survivors: &BTreeSet<usize>,
) -> IndexRecovery {
    let [Some(images), Some(objects), Some(faces)] = graphs else {
        return if survivors.is_empty() { IndexRecovery::Empty } else { IndexRecovery::Rebuilt };
    };
    let graphs = [images, objects, faces];
    let added = survivors.iter().filter(|slot| graphs.iter().any(|g| !g.contains(slot))).count();
    let held: BTreeSet<usize> = graphs.iter().flat_map(|g| g.iter().copied()).collect();
    let removed = held
        .difference(survivors)
        .map(|&slot| {
            let vectors = [1, docs[slot].objects.len(), docs[slot].faces.len()];
            vectors.iter().zip(graphs).filter(|(_, g)| g.contains(&slot)).map(|(n, _)| n).sum::<usize>()
        })
        .sum();
    IndexRecovery::Loaded { added, removed }
}

fn file_hash(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    // DefaultHasher::new() has fixed keys: the same bytes hash alike in every process.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(&bytes);
    Some(hasher.finish())
}

fn temporary(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.tmp"))
}

/// The writer role: runs the script named by `RECOVERY_WRITER`, then waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_writer() {
    let Ok(name) = std::env::var(WRITER_ENV) else { return };
    let dir = PathBuf::from(std::env::var(WRITER_DIR_ENV).unwrap());
    let snapshots = std::env::var(WRITER_SNAPSHOTS_ENV).ok().map(PathBuf::from);
    let docs = documents();
    let store = EmbeddedStore::open_async(writer_config(&dir, &name)).await.unwrap();
    let mut saved = 0;
    let paced = name.starts_with("background");
    for op in script(&name) {
        if paced {
            // Spread over more than one look of the checkpoint thread (every 500 ms).
            std::thread::sleep(Duration::from_millis(40));
        }
        match op {
            Op::Put(batch) => {
                let outcomes = store.put_batch(batch.iter().map(|&i| docs[i].clone()).collect()).await.unwrap();
                assert!(outcomes.iter().all(|o| matches!(o, Ok(PutOutcome::Created))), "{outcomes:?}");
            }
            Op::Delete(i) => assert!(store.delete(&docs[i].id).await.unwrap(), "{} not deleted", docs[i].id),
            Op::Checkpoint => {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.checkpoint()).await.unwrap().unwrap();
                let hashes = GRAPH_FILES.map(|name| file_hash(&dir.join(name)).expect("a saved graph"));
                if let Some(snapshots) = &snapshots {
                    let snapshot = snapshots.join(saved.to_string());
                    std::fs::create_dir_all(&snapshot).unwrap();
                    for name in GRAPH_FILES {
                        std::fs::copy(dir.join(name), snapshot.join(name)).unwrap();
                    }
                }
                println!("CHECKPOINT {saved} {:x} {:x} {:x}", hashes[0], hashes[1], hashes[2]);
                saved += 1;
            }
        }
    }
    println!("DONE");
    // Returning would drop the store, which checkpoints; the parent kills us first. The bound
    // only keeps an orphan from living forever, and abort runs no destructor either.
    std::thread::sleep(Duration::from_secs(600));
    std::process::abort();
}

/// A running writer and what it has printed so far.
struct Writer {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// File hashes (images, objects, faces) printed after each checkpoint.
    checkpoints: Vec<[u64; 3]>,
    done: bool,
}

impl Writer {
    fn spawn(script: &str, dir: &Path, snapshots: Option<&Path>) -> Writer {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--exact", "recovery_writer", "--nocapture", "--test-threads", "1"])
            .env(WRITER_ENV, script)
            .env(WRITER_DIR_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(snapshots) = snapshots {
            command.env(WRITER_SNAPSHOTS_ENV, snapshots);
        }
        let mut child = command.spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Writer { child, lines, checkpoints: Vec::new(), done: false }
    }

    /// Reads lines until `enough` holds; false if the output ended first.
    fn read_until(&mut self, enough: impl Fn(&Writer) -> bool) -> bool {
        while !enough(self) {
            let Some(line) = self.lines.next() else { return false };
            let line = line.unwrap();
            // libtest prints "test recovery_writer ... " without a newline before the test
            // runs, so the first line the writer prints does not start the line.
            if let Some((_, rest)) = line.split_once("CHECKPOINT ") {
                let fields: Vec<&str> = rest.split(' ').collect();
                assert_eq!(fields[0].parse::<usize>().unwrap(), self.checkpoints.len(), "{line}");
                let hash = |i: usize| u64::from_str_radix(fields[i], 16).unwrap();
                self.checkpoints.push([hash(1), hash(2), hash(3)]);
            } else if line.ends_with("DONE") {
                self.done = true;
            }
        }
        true
    }

    /// SIGKILL, then the rest of what it printed before dying.
    fn kill(mut self) -> Writer {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.read_until(|_| false);
        self
    }
}

impl Drop for Writer {
    /// A test that fails before its kill leaves no writer behind.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Writer {
    /// Runs the script to its end and kills the writer there.
    fn run_to_end(script: &str, dir: &Path, snapshots: Option<&Path>) -> Writer {
        Writer::spawn(script, dir, snapshots).wait_for_end(script).kill()
    }

    /// Reads until the writer has run its whole script (it then waits to be killed).
    fn wait_for_end(mut self, script: &str) -> Writer {
        assert!(self.read_until(|w| w.done), "the writer ended before finishing {script}");
        self
    }

    /// Which checkpoint each graph file in `dir` comes from: the one whose hash was printed,
    /// else the one the writer was inside when killed (its hashes never printed); `None`
    /// when the file is missing.
    fn origins(&self, dir: &Path) -> [Option<usize>; 3] {
        std::array::from_fn(|g| {
            let hash = file_hash(&dir.join(GRAPH_FILES[g]))?;
            Some(self.checkpoints.iter().position(|saved| saved[g] == hash).unwrap_or(self.checkpoints.len()))
        })
    }
}

/// The records: the records database and the vector file its records name.
fn copy_records(from: &Path, to: &Path) {
    for name in [RECORDS_FILE, VECTORS_FILE] {
        std::fs::copy(from.join(name), to.join(name)).unwrap();
    }
}

fn slots(store: &EmbeddedStore) -> BTreeSet<usize> {
    store
        .image_ids()
        .iter()
        .map(|id| id.strip_prefix("rec-").and_then(|n| n.parse().ok()).expect("a pool id"))
        .collect()
}

fn filters() -> Vec<SearchFilter> {
    vec![
        SearchFilter::default(),
        SearchFilter { tags: vec!["city".into()], ..Default::default() },
        SearchFilter { classes: vec!["dog".into(), "cat".into()], min_confidence: 0.3, ..Default::default() },
        SearchFilter {
            created_from: Some(common::BASE_TIME + 30 * 3600),
            created_to: Some(common::BASE_TIME + 330 * 3600),
            tags: vec!["beach".into()],
            ..Default::default()
        },
    ]
}

fn assert_same(context: &str, got: Vec<(String, f32)>, expected: Vec<(String, f32)>) {
    assert_eq!(expected.len(), K, "{context}: the reference should fill the page");
    common::assert_same_ranking(context, &got, &expected);
}

/// Image, object and face searches, unfiltered and filtered, equal the brute-force reference
/// over the survivors. Queries: random directions, vectors of survivors, and vectors of
/// deleted records (which a graph that kept them would rank first).
async fn assert_searches_exact(
    store: &EmbeddedStore,
    docs: &[ImageRecord],
    survivors: &BTreeSet<usize>,
    context: &str,
) {
    let alive: Vec<ImageRecord> = survivors.iter().map(|&i| docs[i].clone()).collect();
    let last = *survivors.last().expect("survivors");
    let deleted: Vec<&ImageRecord> = (0..last).filter(|i| !survivors.contains(i)).map(|i| &docs[i]).collect();
    // A kill early in a script may come before its first delete: then there is none to query.
    let samples: Vec<&ImageRecord> =
        [alive.first(), alive.last(), alive.get(alive.len() / 2)].into_iter().flatten().collect();
    let samples: Vec<&ImageRecord> =
        samples.into_iter().chain(deleted.first().copied()).chain(deleted.last().copied()).collect();
    let mut rng = common::Rng::new(41);
    let random: Vec<Vec<f32>> = (0..3).map(|_| rng.unit_vector(common::DIMENSION)).collect();
    let page = Page { k: K, offset: 0 };
    for filter in filters() {
        let queries = |vector: &dyn Fn(&ImageRecord) -> Vec<f32>| {
            random.iter().cloned().chain(samples.iter().map(|d| vector(d))).collect::<Vec<_>>()
        };
        for query in queries(&|d| d.embedding.clone()) {
            let hits = store.search_images(&query, &filter, page).await.unwrap();
            let got = hits.into_iter().map(|h| (h.image_id, h.score)).collect();
            assert_same(
                &format!("{context}: images {filter:?}"),
                got,
                common::exact_images(&alive, &query, &filter, page),
            );
        }
        for query in queries(&|d| d.objects[1].embedding.clone()) {
            let hits = store.search_objects(&query, &filter, page).await.unwrap();
            let got = hits.into_iter().map(|h| (format!("{}#{}", h.image_id, h.object_index), h.score)).collect();
            assert_same(
                &format!("{context}: objects {filter:?}"),
                got,
                common::exact_objects(&alive, &query, &filter, page),
            );
        }
        for query in queries(&|d| d.faces[0].embedding.clone()) {
            let hits = store.search_faces(&query, &filter, page).await.unwrap();
            let got = hits.into_iter().map(|h| (format!("{}#{}", h.image_id, h.face_index), h.score)).collect();
            assert_same(
                &format!("{context}: faces {filter:?}"),
                got,
                common::exact_faces(&alive, &query, &filter, page),
            );
        }
    }
}

/// Every stored vector is reachable in its graph: searched for with itself, it comes first
/// with cosine 1. (The random queries above would notice an unreachable vector only when it
/// ranks in their top 10.)
async fn assert_every_vector_found(
    store: &EmbeddedStore,
    docs: &[ImageRecord],
    survivors: &BTreeSet<usize>,
    context: &str,
) {
    let (filter, page) = (SearchFilter::default(), Page { k: 1, offset: 0 });
    let first = |hits: Vec<(String, f32)>| hits.into_iter().next().unwrap_or_default();
    for doc in survivors.iter().map(|&i| &docs[i]) {
        let hit = first(
            store
                .search_images(&doc.embedding, &filter, page)
                .await
                .unwrap()
                .into_iter()
                .map(|h| (h.image_id, h.score))
                .collect(),
        );
        assert!(
            hit.0 == doc.id && hit.1 > 1.0 - 1e-5,
            "{context}: image {} not found by its own vector: {hit:?}",
            doc.id
        );
        for (i, object) in doc.objects.iter().enumerate() {
            let hits = store.search_objects(&object.embedding, &filter, page).await.unwrap();
            let hit =
                first(hits.into_iter().map(|h| (format!("{}#{}", h.image_id, h.object_index), h.score)).collect());
            assert!(
                hit.0 == format!("{}#{i}", doc.id) && hit.1 > 1.0 - 1e-5,
                "{context}: object {}#{i} not found: {hit:?}",
                doc.id
            );
        }
        for (i, face) in doc.faces.iter().enumerate() {
            let hits = store.search_faces(&face.embedding, &filter, page).await.unwrap();
            let hit = first(hits.into_iter().map(|h| (format!("{}#{}", h.image_id, h.face_index), h.score)).collect());
            assert!(
                hit.0 == format!("{}#{i}", doc.id) && hit.1 > 1.0 - 1e-5,
                "{context}: face {}#{i} not found: {hit:?}",
                doc.id
            );
        }
    }
}

/// Opens `dir`, which must hold exactly `survivors` and recover as `expected`, with exact
/// searches; then checkpoints and opens again: the saved graphs replace whatever was there
/// (a leftover `*.tmp` included) and load with nothing to reconcile.
async fn open_and_check(
    dir: &Path,
    docs: &[ImageRecord],
    survivors: &BTreeSet<usize>,
    expected: IndexRecovery,
    context: &str,
) {
    let store = EmbeddedStore::open_async(config(dir)).await.unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
    assert_eq!(store.recovery(), expected, "{context}: recovery");
    assert_eq!(slots(&store), *survivors, "{context}: stored records");
    assert_eq!(store.count().await.unwrap(), survivors.len(), "{context}: count");
    assert_searches_exact(&store, docs, survivors, context).await;
    assert_every_vector_found(&store, docs, survivors, context).await;
    store.checkpoint().unwrap();
    drop(store);
    if expected != (IndexRecovery::Loaded { added: 0, removed: 0 }) {
        // A store with changes since its graphs were saved writes every graph again.
        for name in GRAPH_FILES {
            assert!(!temporary(dir, name).exists(), "{context}: {name}.tmp left after a checkpoint");
        }
    }
    let store = EmbeddedStore::open_async(config(dir)).await.unwrap();
    assert_eq!(store.recovery(), IndexRecovery::Loaded { added: 0, removed: 0 }, "{context}: after the checkpoint");
    assert_searches_exact(&store, docs, survivors, &format!("{context}, reopened")).await;
    assert_every_vector_found(&store, docs, survivors, &format!("{context}, reopened")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_after_a_checkpoint_replays_puts_and_deletes() {
    let docs = documents();
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::run_to_end("after-checkpoint", dir.path(), None);
    assert_eq!(writer.checkpoints.len(), 1);
    assert_eq!(
        writer.origins(dir.path()),
        [Some(0); 3],
        "the graph files changed after the checkpoint (a checkpoint ran at the kill?)"
    );

    let trace = Trace::of(&after_checkpoint());
    let saved = &trace.checkpoints[0];
    let survivors = trace.last();
    let expected = expected_recovery(&docs, [Some(saved); 3], survivors);
    // By hand from the script: 240..280 put after the checkpoint, less 245, 250 and 271
    // deleted; 12 of the checkpointed records deleted, each with its image, objects and faces.
    let deleted: Vec<usize> = (0..INITIAL).step_by(23).chain([101]).collect();
    let removed: usize = deleted.iter().map(|&i| 1 + docs[i].objects.len() + docs[i].faces.len()).sum();
    assert_eq!(expected, IndexRecovery::Loaded { added: 37, removed });
    assert!(removed >= 4 * 12);
    open_and_check(dir.path(), &docs, survivors, expected, "kill after a checkpoint").await;
}

/// Background saves by time: a writer that never checkpoints and is killed after its changes
/// are older than the interval leaves graphs that load with nothing to replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_checkpoints_by_time_leave_nothing_to_replay() {
    let docs = documents();
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::spawn("background-time", dir.path(), None).wait_for_end("background-time");
    // Interval 100 ms, a look every 500 ms: saved well within this.
    std::thread::sleep(Duration::from_secs(2));
    writer.kill();
    let survivors = Trace::of(&background()).last().clone();
    let expected = IndexRecovery::Loaded { added: 0, removed: 0 };
    open_and_check(dir.path(), &docs, &survivors, expected, "background saves by time").await;
}

/// Background saves by count: killed after the last put, the store replays fewer records than
/// the count allows, and serves exactly what was acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_checkpoints_by_count_bound_the_replay() {
    let docs = documents();
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer::spawn("background-count", dir.path(), None).wait_for_end("background-count");
    std::thread::sleep(Duration::from_secs(1));
    writer.kill();
    let survivors = Trace::of(&background()).last().clone();
    let store = EmbeddedStore::open_async(config(dir.path())).await.unwrap();
    let most_vectors_per_batch = (0..INITIAL)
        .step_by(10)
        .map(|first| (first..first + 10).map(|i| 1 + docs[i].objects.len() + docs[i].faces.len()).sum::<usize>())
        .max()
        .unwrap();
    let bound = (COUNT_POLICY as usize + most_vectors_per_batch) / 4;
    match store.recovery() {
        IndexRecovery::Loaded { added, .. } => {
            assert!(added < bound, "{added} records replayed, saves by count should leave fewer than {bound}")
        }
        other => panic!("background saves by count left no loadable graphs: {other:?}"),
    }
    assert_eq!(slots(&store), survivors);
    assert_searches_exact(&store, &docs, &survivors, "background saves by count").await;
    assert_every_vector_found(&store, &docs, &survivors, "background saves by count").await;
}

/// The graphs a batch put builds, and those a rebuild builds, reach every vector. Both insert
/// many vectors at once, the shards of the object graph in parallel; usearch's concurrent
/// insertion into one graph stranded some (unum-cloud/USearch#735), which this caught before
/// each graph (now each shard) was filled from one thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_put_and_rebuild_reach_every_vector() {
    let docs = documents();
    let dir = tempfile::tempdir().unwrap();
    let all: BTreeSet<usize> = (0..POOL).collect();
    {
        let store = EmbeddedStore::open_async(sharded(dir.path())).await.unwrap();
        common::ingest(&store, &docs).await;
        assert_every_vector_found(&store, &docs, &all, "batch put").await;
    }
    let files = graph_files(dir.path());
    assert_eq!(files, ["faces.usearch", "images.usearch", "objects.0-of-2.usearch", "objects.1-of-2.usearch"]);
    for name in files {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    let store = EmbeddedStore::open_async(sharded(dir.path())).await.unwrap();
    assert_eq!(store.recovery(), IndexRecovery::Rebuilt);
    assert_every_vector_found(&store, &docs, &all, "rebuild").await;
}

/// How a graph file is damaged.
#[derive(Clone, Copy, Debug)]
enum Damage {
    Missing,
    Empty,
    /// Cut to this fraction of its length.
    Truncated(f32),
    LastByteCut,
    /// Random bytes, as long as the file.
    Random(u64),
    /// The valid graph of the same name from a store of another dimension.
    OtherDimension,
    /// The valid graph of the same name from another store of the same dimension holding the
    /// same ids (slots) with other vectors: only the records' generation tells it apart.
    OtherStore,
}

/// The same records (ids, slots, everything else) with other vectors of `dimension`.
fn with_other_vectors(docs: &[ImageRecord], dimension: usize, seed: u64) -> Vec<ImageRecord> {
    let mut rng = common::Rng::new(seed);
    docs.iter()
        .map(|d| {
            let mut d = d.clone();
            d.embedding = rng.unit_vector(dimension);
            d.objects.iter_mut().for_each(|o| o.embedding = rng.unit_vector(dimension));
            d.faces.iter_mut().for_each(|f| f.embedding = rng.unit_vector(dimension));
            d
        })
        .collect()
}

/// A store in `dir` holding `docs[..INITIAL]` less those of `DELETED`, checkpointed.
async fn checkpointed_store(dir: &Path, docs: &[ImageRecord]) {
    let store = EmbeddedStore::open_async(config(dir)).await.unwrap();
    common::ingest(&store, &docs[..INITIAL]).await;
    for i in DELETED {
        assert!(store.delete(&docs[i].id).await.unwrap());
    }
    store.checkpoint().unwrap();
}

/// Deleted by `checkpointed_store`.
const DELETED: [usize; 3] = [3, 50, 199];

fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = common::Rng::new(seed);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_foreign_graph_files_are_rebuilt() {
    let docs = documents();
    let base = tempfile::tempdir().unwrap();
    let survivors: BTreeSet<usize> = (0..INITIAL).filter(|i| !DELETED.contains(i)).collect();
    checkpointed_store(base.path(), &docs).await;
    let other = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open_async(config(other.path())).await.unwrap();
        common::ingest(&store, &with_other_vectors(&docs[..20], 16, 43)).await;
        store.checkpoint().unwrap();
    }
    let twin = tempfile::tempdir().unwrap();
    checkpointed_store(twin.path(), &with_other_vectors(&docs, common::DIMENSION, 44)).await;
    let damages = [
        Damage::Missing,
        Damage::Empty,
        Damage::Truncated(0.5),
        Damage::Truncated(0.02),
        Damage::LastByteCut,
        Damage::Random(1),
        Damage::Random(2),
        Damage::OtherDimension,
        Damage::OtherStore,
    ];
    for name in GRAPH_FILES {
        let original = std::fs::read(base.path().join(name)).unwrap();
        for damage in damages {
            let case = tempfile::tempdir().unwrap();
            copy_records(base.path(), case.path());
            for graph in GRAPH_FILES {
                std::fs::copy(base.path().join(graph), case.path().join(graph)).unwrap();
            }
            let path = case.path().join(name);
            let damaged = match damage {
                Damage::Missing => None,
                Damage::Empty => Some(Vec::new()),
                Damage::Truncated(fraction) => Some(original[..(original.len() as f32 * fraction) as usize].to_vec()),
                Damage::LastByteCut => Some(original[..original.len() - 1].to_vec()),
                Damage::Random(seed) => Some(random_bytes(seed, original.len())),
                Damage::OtherDimension => Some(std::fs::read(other.path().join(name)).unwrap()),
                Damage::OtherStore => Some(std::fs::read(twin.path().join(name)).unwrap()),
            };
            match damaged {
                Some(bytes) => std::fs::write(&path, bytes).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
            open_and_check(case.path(), &docs, &survivors, IndexRecovery::Rebuilt, &format!("{name} {damage:?}")).await;
        }
    }
}

/// A records database replaced by another one (same dimension, ids and slots, other vectors)
/// under the saved graphs of the first: the graphs name another generation and are rebuilt,
/// so searches answer with the new records' vectors. Key by key the old graphs match the
/// new records, so without the generation they would be loaded and serve the old vectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphs_of_a_replaced_records_database_are_rebuilt() {
    let docs = documents();
    let replacement = with_other_vectors(&docs, common::DIMENSION, 45);
    let survivors: BTreeSet<usize> = (0..INITIAL).filter(|i| !DELETED.contains(i)).collect();
    let dir = tempfile::tempdir().unwrap();
    checkpointed_store(dir.path(), &docs).await;
    let other = tempfile::tempdir().unwrap();
    checkpointed_store(other.path(), &replacement).await;
    copy_records(other.path(), dir.path());
    open_and_check(dir.path(), &replacement, &survivors, IndexRecovery::Rebuilt, "records replaced").await;
}

/// Crash states of a checkpoint built from two real ones: `checkpoint` saves images, objects,
/// faces in turn, each to `<name>.tmp` then renamed, so a crash leaves the first few graphs
/// from the newer checkpoint, the rest from the older one, and the graph being written as a
/// partial or complete `.tmp`. The records are those of a writer killed after more changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_inside_a_checkpoint_leaves_a_store_that_opens() {
    let docs = documents();
    let dir = tempfile::tempdir().unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let writer = Writer::run_to_end("two-checkpoints", dir.path(), Some(snapshots.path()));
    assert_eq!(writer.checkpoints.len(), 2);
    assert_eq!(writer.origins(dir.path()), [Some(1); 3], "the graph files changed after the last checkpoint");
    let trace = Trace::of(&two_checkpoints());
    let survivors = trace.last();
    let snapshot = |n: usize, name: &str| snapshots.path().join(n.to_string()).join(name);

    #[derive(Clone, Copy, Debug)]
    enum Temporary {
        Absent,
        Partial,
        Complete,
    }
    let mut cases = Vec::new();
    for renamed in 0..3 {
        for tmp in [Temporary::Absent, Temporary::Partial, Temporary::Complete] {
            cases.push((renamed, tmp, true));
        }
    }
    cases.push((3, Temporary::Absent, true));
    // The first checkpoint of a store, interrupted: the graphs not yet renamed do not exist.
    cases.extend([(0, Temporary::Partial, false), (1, Temporary::Partial, false), (2, Temporary::Complete, false)]);
    let mut loaded_with_changes = 0;
    for (renamed, tmp, older_exists) in cases {
        let context = format!("{renamed} graphs renamed, temporary {tmp:?}, older checkpoint present: {older_exists}");
        let case = tempfile::tempdir().unwrap();
        copy_records(dir.path(), case.path());
        let mut graphs: [Option<&BTreeSet<usize>>; 3] = [None; 3];
        for (g, name) in GRAPH_FILES.iter().enumerate() {
            if g < renamed {
                std::fs::copy(snapshot(1, name), case.path().join(name)).unwrap();
                graphs[g] = Some(&trace.checkpoints[1]);
            } else if older_exists {
                std::fs::copy(snapshot(0, name), case.path().join(name)).unwrap();
                graphs[g] = Some(&trace.checkpoints[0]);
            }
        }
        if renamed < 3 {
            let newer = std::fs::read(snapshot(1, GRAPH_FILES[renamed])).unwrap();
            let bytes = match tmp {
                Temporary::Absent => None,
                Temporary::Partial => Some(&newer[..newer.len() / 3]),
                Temporary::Complete => Some(&newer[..]),
            };
            if let Some(bytes) = bytes {
                std::fs::write(temporary(case.path(), GRAPH_FILES[renamed]), bytes).unwrap();
            }
        }
        let expected = expected_recovery(&docs, graphs, survivors);
        if let IndexRecovery::Loaded { added, removed } = expected {
            assert!(added > 0 && removed > 0, "{context}: the fixture should leave work for recovery");
            loaded_with_changes += 1;
        }
        open_and_check(case.path(), &docs, survivors, expected, &context).await;
    }
    assert_eq!(loaded_with_changes, 10);
}

/// A writer checkpointing in a loop, killed at random moments late in a cycle: whatever the kill leaves
/// (graphs from two checkpoints, a partial `.tmp`) opens with the counts its files imply and
/// exact searches. Repeats until three kills landed inside a checkpoint (visibly: a `.tmp`
/// left or graphs from different checkpoints), at most 20 times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_checkpoints_leaves_a_store_that_opens() {
    let docs = documents();
    let trace = Trace::of(&checkpoint_loop());
    let mut rng = common::Rng::new(47);
    let (mut rounds, mut torn) = (0, 0);
    while torn < 3 && rounds < 20 {
        rounds += 1;
        let dir = tempfile::tempdir().unwrap();
        let mut writer = Writer::spawn("checkpoint-loop", dir.path(), None);
        // One cycle of the script (puts, deletes, then a checkpoint) timed as it runs on
        // this machine now, then a kill late in the next cycle, where its checkpoint is: a
        // fixed pause misses the checkpoints whenever the disk's syncs are slower than usual.
        let target = 2 + rng.below(4);
        assert!(writer.read_until(|w| w.checkpoints.len() >= target), "the writer ended early");
        let cycle_started = Instant::now();
        assert!(writer.read_until(|w| w.checkpoints.len() > target), "the writer ended early");
        std::thread::sleep(cycle_started.elapsed().mul_f64(0.4 + 0.6 * f64::from(rng.unit())));
        let writer = writer.kill();
        assert!(!writer.done, "the writer finished its script before the kill");

        let printed = writer.checkpoints.len();
        let origins = writer.origins(dir.path());
        let tmp_left: Vec<&str> = GRAPH_FILES.into_iter().filter(|name| temporary(dir.path(), name).exists()).collect();
        // Which records survived, read from a copy: an open reconciles the graphs and saves
        // them on drop, which would erase the state under test.
        let survivors = {
            let scratch = tempfile::tempdir().unwrap();
            copy_records(dir.path(), scratch.path());
            slots(&EmbeddedStore::open_async(config(scratch.path())).await.unwrap())
        };
        // The records are those after some operation since the last printed checkpoint.
        assert!(
            trace.states.iter().any(|(done, state)| *done == printed && *state == survivors),
            "round {rounds}: the stored records match no point of the script after checkpoint {printed}"
        );
        let graphs = origins.map(|origin| {
            let origin = origin.expect("every graph file exists after the first checkpoint");
            if origin == printed {
                // From the checkpoint in progress: it started after the last change.
                assert_eq!(trace.checkpoints[origin], survivors, "round {rounds}: a graph newer than the records");
            }
            Some(&trace.checkpoints[origin])
        });
        let expected = expected_recovery(&docs, graphs, &survivors);
        let inside = !tmp_left.is_empty() || origins.iter().any(|o| *o != origins[0]);
        torn += usize::from(inside);
        let context =
            format!("round {rounds}: graphs from checkpoints {origins:?}, {printed} printed, temporary {tmp_left:?}");
        eprintln!("{context}: expecting {expected:?}");
        assert!(matches!(expected, IndexRecovery::Loaded { .. }), "{context}");
        open_and_check(dir.path(), &docs, &survivors, expected, &context).await;
    }
    assert!(torn >= 1, "no kill in {rounds} rounds landed inside a checkpoint");
}

/// Deletes free room in the graphs that later puts take: a store that replaces its whole
/// content 20 times (more vectors in all than the graphs' first room of 1,024) keeps the
/// capacity of its first fill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes_and_puts_reuse_graph_room() {
    let docs = documents();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_async(config(dir.path())).await.unwrap();
    let round = 60;
    let mut first_fill = None;
    let mut added = [0; 3];
    for cycle in 0..20 {
        let batch: Vec<ImageRecord> = docs[..round]
            .iter()
            .map(|doc| ImageRecord { id: format!("{}-cycle-{cycle}", doc.id), ..doc.clone() })
            .collect();
        let outcomes = store.put_batch(batch.clone()).await.unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, Ok(PutOutcome::Created))));
        let stats = store.graph_stats();
        let stored = [round, batch.iter().map(|d| d.objects.len()).sum(), batch.iter().map(|d| d.faces.len()).sum()];
        assert_eq!(stats.vectors, stored, "cycle {cycle}: vectors held");
        added.iter_mut().zip(stored).for_each(|(total, n)| *total += n);
        let first = *first_fill.get_or_insert(stats.capacity);
        assert_eq!(stats.capacity, first, "cycle {cycle}: the graphs grew after deletes");
        for doc in &batch {
            assert!(store.delete(&doc.id).await.unwrap());
        }
        assert_eq!(store.graph_stats().vectors, [0; 3], "cycle {cycle}: deleted vectors still held");
    }
    let first = first_fill.unwrap();
    assert!((0..3).all(|g| added[g] > first[g]), "the test adds fewer vectors ({added:?}) than the room ({first:?})");
}

/// After most images are deleted, compaction rebuilds each graph from the vectors it holds:
/// no removed nodes left, less memory, and searches, every vector's reachability and a
/// reopen from the saved graphs all still match the survivors exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_drops_removed_nodes_and_keeps_searches_exact() {
    let docs = documents();
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open_async(config(dir.path())).await.unwrap();
    let outcomes = store.put_batch(docs.clone()).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Ok(PutOutcome::Created))));
    let survivors: BTreeSet<usize> = (0..POOL).filter(|i| i % 4 == 0).collect();
    let mut deleted = [0; 3];
    for (i, doc) in docs.iter().enumerate().filter(|(i, _)| !survivors.contains(i)) {
        assert!(store.delete(&doc.id).await.unwrap(), "{i}");
        deleted.iter_mut().zip([1, doc.objects.len(), doc.faces.len()]).for_each(|(n, d)| *n += d);
    }
    let before = store.graph_stats();
    assert_eq!(before.removed, deleted, "removed nodes before compaction");
    assert!(before.capacity[1] > 1024, "the object graph should have grown past its first room: {before:?}");

    assert_eq!(store.compact().unwrap(), 3);
    let after = store.graph_stats();
    assert_eq!(after.removed, [0; 3]);
    assert_eq!(after.vectors, before.vectors);
    assert!(after.capacity[1] < before.capacity[1], "object graph room {:?} -> {:?}", before, after);
    assert!(after.memory_bytes < before.memory_bytes, "memory {} -> {}", before.memory_bytes, after.memory_bytes);
    assert_eq!(store.compact().unwrap(), 0, "nothing left to compact");
    assert_searches_exact(&store, &docs, &survivors, "compacted").await;
    assert_every_vector_found(&store, &docs, &survivors, "compacted").await;
    store.checkpoint().unwrap();
    drop(store);
    let store = EmbeddedStore::open_async(config(dir.path())).await.unwrap();
    assert_eq!(store.recovery(), IndexRecovery::Loaded { added: 0, removed: 0 });
    assert_searches_exact(&store, &docs, &survivors, "compacted, reopened").await;
}

/// Puts that take the nodes of deleted vectors are counted per graph, across a reopen, and
/// once they pass `compact_reused_fraction` of a graph's vectors, compaction rebuilds it:
/// the count starts again and searches still match the survivors exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reused_nodes_past_their_share_rebuild_the_graph() {
    let docs = documents();
    let dir = tempfile::tempdir().unwrap();
    // Only reuse decides here; the object graph's shards are rebuilt in parallel.
    let config =
        |dir: &Path| EmbeddedConfig { compact_removed_fraction: 1.0, compact_reused_fraction: 0.5, ..sharded(dir) };
    let store = EmbeddedStore::open_async(config(dir.path())).await.unwrap();
    common::ingest(&store, &docs[..100]).await;
    replace(&store, &docs[..30], &docs[100..130]).await;
    let first = store.graph_stats();
    assert_eq!(first.reused[0], 30, "every new image took a deleted one's node: {first:?}");
    assert!(
        (0..3).all(|g| first.reused[g] > 0 && (first.reused[g] as f32) < 0.5 * first.vectors[g] as f32),
        "the first round stays under the share in every graph: {first:?}"
    );
    assert_eq!(store.compact().unwrap(), 0, "nothing past its share yet");
    store.checkpoint().unwrap();
    drop(store);

    let store = EmbeddedStore::open_async(config(dir.path())).await.unwrap();
    assert_eq!(store.recovery(), IndexRecovery::Loaded { added: 0, removed: 0 });
    let reopened = store.graph_stats();
    assert_eq!((reopened.reused, reopened.removed), (first.reused, first.removed), "counts saved with the graphs");
    replace(&store, &docs[30..60], &docs[130..160]).await;
    let second = store.graph_stats();
    assert_eq!(second.reused[0], 60);
    let past: Vec<usize> = (0..3).filter(|&g| second.reused[g] as f32 >= 0.5 * second.vectors[g] as f32).collect();
    assert!(past.contains(&0) && past.contains(&1), "images and objects past the share: {second:?}");
    assert_eq!(store.compact().unwrap(), past.len());
    let after = store.graph_stats();
    for g in 0..3 {
        let expected = if past.contains(&g) { 0 } else { second.reused[g] };
        assert_eq!(after.reused[g], expected, "graph {g}: {second:?} -> {after:?}");
    }
    assert_eq!(after.vectors, second.vectors);
    let survivors: BTreeSet<usize> = (60..160).collect();
    assert_searches_exact(&store, &docs, &survivors, "rebuilt after reuse").await;
    assert_every_vector_found(&store, &docs, &survivors, "rebuilt after reuse").await;
}

/// Deletes `gone`, then puts `new` in one batch.
async fn replace(store: &EmbeddedStore, gone: &[ImageRecord], new: &[ImageRecord]) {
    for doc in gone {
        assert!(store.delete(&doc.id).await.unwrap());
    }
    let outcomes = store.put_batch(new.to_vec()).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Ok(PutOutcome::Created))));
}

/// The background thread compacts by itself (here at any share of removed nodes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_background_thread_compacts() {
    let docs = documents();
    let dir = tempfile::tempdir().unwrap();
    // The thread runs (an interval is set) but saves nothing by time during the test.
    let checkpoint = CheckpointPolicy { after_changes: 0, interval: Some(Duration::from_secs(3600)) };
    let store =
        EmbeddedStore::open_async(EmbeddedConfig { checkpoint, compact_removed_fraction: 0.01, ..config(dir.path()) })
            .await
            .unwrap();
    store.put_batch(docs[..100].to_vec()).await.unwrap();
    for doc in &docs[..50] {
        assert!(store.delete(&doc.id).await.unwrap());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while store.graph_stats().removed != [0; 3] {
        assert!(std::time::Instant::now() < deadline, "not compacted: {:?}", store.graph_stats());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivors: BTreeSet<usize> = (50..100).collect();
    assert_searches_exact(&store, &docs, &survivors, "compacted in the background").await;
}

/// An open that finds the saved graphs behind the records returns before it inserts what
/// they lack: a background thread catches up while searches score the missing vectors
/// exactly. The saved graphs are those of a checkpoint taken after the first records, as a
/// kill -9 later would leave them. Searches must equal the brute-force reference while the
/// catch-up is under way (asserted: vectors were pending when they started) and after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_vectors_are_replayed_in_the_background_and_searched_exactly_meanwhile() {
    const RECORDS: usize = 3000;
    const CHECKPOINTED: usize = 200;
    let docs = records(RECORDS, 47);
    let config = |dir: &Path| EmbeddedConfig {
        // More than the vectors of any graph: graph searches are exhaustive.
        hnsw: HnswParams { expansion_search: 4 * RECORDS, ..HnswParams::default() },
        ..config(dir)
    };
    let dir = tempfile::tempdir().unwrap();
    let saved = tempfile::tempdir().unwrap();
    {
        let store = EmbeddedStore::open_async(config(dir.path())).await.unwrap();
        common::ingest(&store, &docs[..CHECKPOINTED]).await;
        store.checkpoint().unwrap();
        for name in GRAPH_FILES {
            std::fs::copy(dir.path().join(name), saved.path().join(name)).unwrap();
        }
        let outcomes = store.put_batch(docs[CHECKPOINTED..].to_vec()).await.unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, Ok(PutOutcome::Created))));
    }
    for name in GRAPH_FILES {
        std::fs::copy(saved.path().join(name), dir.path().join(name)).unwrap();
    }
    let store = EmbeddedStore::open_async(config(dir.path())).await.unwrap();
    let pending_at_open = store.pending_vectors();
    let later = &docs[CHECKPOINTED..];
    let vectors_later: usize = later.iter().map(|d| 1 + d.objects.len() + d.faces.len()).sum();
    assert!(pending_at_open > 0, "the open inserted all {vectors_later} missing vectors itself");
    assert!(pending_at_open <= vectors_later, "{pending_at_open} pending, {vectors_later} missing");
    assert_eq!(store.recovery(), IndexRecovery::Loaded { added: later.len(), removed: 0 });
    let survivors: BTreeSet<usize> = (0..RECORDS).collect();
    assert_searches_exact(&store, &docs, &survivors, "during the catch-up").await;
    wait_for_catch_up(&store).await;
    let objects: usize = docs.iter().map(|d| d.objects.len()).sum();
    let faces: usize = docs.iter().map(|d| d.faces.len()).sum();
    assert_eq!(store.graph_stats().vectors, [RECORDS, objects, faces]);
    assert_searches_exact(&store, &docs, &survivors, "after the catch-up").await;
    drop(store);

    // More missing than the setting allows: open inserts them before it returns.
    for name in GRAPH_FILES {
        std::fs::copy(saved.path().join(name), dir.path().join(name)).unwrap();
    }
    let config = EmbeddedConfig { background_replay_max_vectors: vectors_later - 1, ..config(dir.path()) };
    let store = EmbeddedStore::open_async(config).await.unwrap();
    assert_eq!(store.pending_vectors(), 0);
    assert_eq!(store.graph_stats().vectors, [RECORDS, objects, faces]);
    assert_eq!(store.recovery(), IndexRecovery::Loaded { added: later.len(), removed: 0 });
    assert_searches_exact(&store, &docs, &survivors, "replayed by the open").await;
}

/// Waits (at most two minutes) until the background catch-up has inserted every pending vector.
async fn wait_for_catch_up(store: &EmbeddedStore) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while store.pending_vectors() > 0 {
        assert!(Instant::now() < deadline, "not caught up: {} vectors pending", store.pending_vectors());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A crash between the saves of the object graph's shards leaves them from two checkpoints:
/// each is reconciled with the records on its own, so the store opens with exact searches
/// and every vector reachable, whichever shard is the older.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_shards_from_different_checkpoints_open_exactly() {
    let docs = documents();
    let dir = tempfile::tempdir().unwrap();
    let snapshots = tempfile::tempdir().unwrap();
    let snapshot = |n: usize| {
        let folder = snapshots.path().join(n.to_string());
        std::fs::create_dir_all(&folder).unwrap();
        for name in graph_files(dir.path()) {
            std::fs::copy(dir.path().join(&name), folder.join(&name)).unwrap();
        }
    };
    let mut survivors: BTreeSet<usize> = (0..INITIAL).collect();
    {
        let store = EmbeddedStore::open_async(sharded(dir.path())).await.unwrap();
        common::ingest(&store, &docs[..INITIAL]).await;
        store.checkpoint().unwrap();
        snapshot(0);
        for outcome in store.put_batch(docs[INITIAL..].to_vec()).await.unwrap() {
            assert!(matches!(outcome, Ok(PutOutcome::Created)), "{outcome:?}");
        }
        survivors.extend(INITIAL..POOL);
        for i in [1, 2, 40, 41, 42, 120, 300, 301] {
            assert!(store.delete(&docs[i].id).await.unwrap());
            survivors.remove(&i);
        }
        store.checkpoint().unwrap();
        snapshot(1);
    }
    for older in 0..OBJECT_SHARDS {
        let context = format!("object shard {older} from the first checkpoint, the rest from the second");
        let case = tempfile::tempdir().unwrap();
        copy_records(dir.path(), case.path());
        for name in graph_files(&snapshots.path().join("1")) {
            let from = if name == format!("objects.{older}-of-{OBJECT_SHARDS}.usearch") { 0 } else { 1 };
            std::fs::copy(snapshots.path().join(from.to_string()).join(&name), case.path().join(&name)).unwrap();
        }
        let store = EmbeddedStore::open_async(sharded(case.path())).await.unwrap();
        match store.recovery() {
            IndexRecovery::Loaded { added, removed } => {
                assert!(added > 0 && removed > 0, "{context}: the older shard lacks puts and holds deletes")
            }
            other => panic!("{context}: {other:?}, expected the saved graphs loaded"),
        }
        assert_eq!(slots(&store), survivors, "{context}: stored records");
        // The graphs the two checkpoints leave are under test here, once caught up: usearch's
        // searches read neighbour lists without locks while an insert rewrites them, so a
        // search during the catch-up may miss an old vector now and then (searches during a
        // catch-up are the test above's).
        wait_for_catch_up(&store).await;
        assert_searches_exact(&store, &docs, &survivors, &context).await;
        assert_every_vector_found(&store, &docs, &survivors, &context).await;
    }
}

/// A store opened with another number of object shards rebuilds that graph once, saves it
/// in the new layout and removes the files of the old one; a missing shard file also means a
/// rebuild.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_shard_count_or_a_missing_shard_rebuilds() {
    let docs = documents();
    let dir = tempfile::tempdir().unwrap();
    let all: BTreeSet<usize> = (0..POOL).collect();
    {
        let store = EmbeddedStore::open_async(config(dir.path())).await.unwrap();
        common::ingest(&store, &docs).await;
    }
    assert_eq!(graph_files(dir.path()), ["faces.usearch", "images.usearch", "objects.usearch"]);
    for round in 0..2 {
        let store = EmbeddedStore::open_async(sharded(dir.path())).await.unwrap();
        assert_eq!(store.recovery(), IndexRecovery::Rebuilt, "round {round}");
        assert_searches_exact(&store, &docs, &all, "rebuilt in shards").await;
        assert_every_vector_found(&store, &docs, &all, "rebuilt in shards").await;
        drop(store);
        assert_eq!(
            graph_files(dir.path()),
            ["faces.usearch", "images.usearch", "objects.0-of-2.usearch", "objects.1-of-2.usearch"],
            "round {round}: the single object file is gone"
        );
        // Round 0 goes on with a shard missing.
        std::fs::remove_file(dir.path().join("objects.1-of-2.usearch")).unwrap();
    }
    let store = EmbeddedStore::open_async(config(dir.path())).await.unwrap();
    assert_eq!(store.recovery(), IndexRecovery::Rebuilt, "back to one shard");
    drop(store);
    assert_eq!(graph_files(dir.path()), ["faces.usearch", "images.usearch", "objects.usearch"]);
    let store = EmbeddedStore::open_async(config(dir.path())).await.unwrap();
    assert_eq!(store.recovery(), IndexRecovery::Loaded { added: 0, removed: 0 });
    assert_every_vector_found(&store, &docs, &all, "one shard again").await;
}
