//! One bad record never stops the embedded store from opening. Values are written straight
//! into `records.redb` (and vectors into `vectors.f32`) beside a stored, checkpointed set:
//! undecodable bytes, a header cut short, vectors past the end of the vector file, a NaN
//! vector, an out-of-range face score, a value stored under another id's key, a slot no put
//! handed out and a slot another record holds. The store must open, serve every good record
//! exactly, and have moved each bad one (key, reason, bytes as they were) to its quarantine
//! table, counted by `Store::quarantined`; the count survives a reopen and a quarantined id
//! can be stored again. A store of the older layout (vectors inside the records) is moved to
//! the current one at open, its unreadable values quarantined the same way.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use visual_store::embedded::{EmbeddedConfig, EmbeddedStore, IndexRecovery};
use visual_store::{ImageRecord, PutOutcome, Store};

const RECORDS_FILE: &str = "records.redb";
const VECTORS_FILE: &str = "vectors.f32";
/// Bytes before the first vector of `vectors.f32`.
const VECTORS_HEADER: u64 = 32;
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const LAYOUT_1_RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const QUARANTINE: TableDefinition<u64, (&str, &str, &[u8])> = TableDefinition::new("quarantine");

/// The record without vectors, as JSON.
fn header_json(record: &ImageRecord) -> Vec<u8> {
    let mut header = record.clone();
    header.embedding.clear();
    header.objects.iter_mut().for_each(|o| o.embedding.clear());
    header.faces.iter_mut().for_each(|f| f.embedding.clear());
    serde_json::to_vec(&header).unwrap()
}

fn vectors_of(record: &ImageRecord) -> impl Iterator<Item = &Vec<f32>> {
    std::iter::once(&record.embedding)
        .chain(record.objects.iter().map(|o| &o.embedding))
        .chain(record.faces.iter().map(|f| &f.embedding))
}

/// A stored value laid out as the embedded store's codec does: slot (u64 LE), index of the
/// first vector in `vectors.f32` (u64 LE), header length (u32 LE), the record without
/// vectors as JSON. Checked against the store's own bytes below.
fn encode(slot: u64, first_vector: u64, record: &ImageRecord) -> Vec<u8> {
    let json = header_json(record);
    let mut bytes = slot.to_le_bytes().to_vec();
    bytes.extend_from_slice(&first_vector.to_le_bytes());
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&json);
    bytes
}

/// The older layout: slot (u64 LE), header length (u32 LE), JSON, then every vector as f32 LE.
fn encode_layout_1(slot: u64, record: &ImageRecord) -> Vec<u8> {
    let json = header_json(record);
    let mut bytes = slot.to_le_bytes().to_vec();
    bytes.extend_from_slice(&(json.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&json);
    for value in vectors_of(record).flatten() {
        bytes.extend_from_slice(&value.to_le_bytes());
    }
    bytes
}

/// The vector file of `dir`, as written by the store.
struct VectorFile(std::fs::File);

impl VectorFile {
    fn open(dir: &Path) -> VectorFile {
        VectorFile(OpenOptions::new().read(true).write(true).open(dir.join(VECTORS_FILE)).unwrap())
    }

    fn len(&self) -> u64 {
        (self.0.metadata().unwrap().len() - VECTORS_HEADER) / (4 * common::DIMENSION as u64)
    }

    fn read(&self, index: u64) -> Vec<f32> {
        let mut bytes = vec![0u8; 4 * common::DIMENSION];
        let offset = VECTORS_HEADER + index * bytes.len() as u64;
        self.0.read_exact_at(&mut bytes, offset).unwrap();
        bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
    }

    /// Appends the record's vectors; returns the index of the first.
    fn append(&self, record: &ImageRecord) -> u64 {
        let first = self.len();
        let bytes: Vec<u8> = vectors_of(record).flatten().flat_map(|v| v.to_le_bytes()).collect();
        self.0.write_all_at(&bytes, VECTORS_HEADER + first * 4 * common::DIMENSION as u64).unwrap();
        first
    }
}

fn with_id(template: &ImageRecord, id: &str, seed: u64) -> ImageRecord {
    let mut rng = common::Rng::new(seed);
    let mut record = template.clone();
    record.id = id.into();
    record.embedding = rng.unit_vector(common::DIMENSION);
    record.objects.iter_mut().for_each(|o| o.embedding = rng.unit_vector(common::DIMENSION));
    record.faces.iter_mut().for_each(|f| f.embedding = rng.unit_vector(common::DIMENSION));
    record
}

/// (key, value, a phrase of the reason it must be quarantined for). The NaN record's vectors
/// are appended to `vectors`; the others name vector 0, which exists.
fn bad_values(template: &ImageRecord, vectors: &VectorFile) -> Vec<(String, Vec<u8>, &'static str)> {
    let mut rng = common::Rng::new(5);
    let garbage: Vec<u8> = (0..300).map(|_| rng.next_u64() as u8).collect();
    let whole = encode(3, 0, &with_id(template, "cut-short", 1));
    let past_the_end = encode(4, 1 << 40, &with_id(template, "past-the-end", 2));
    let mut nan = with_id(template, "nan-vector", 3);
    nan.objects[0].embedding[7] = f32::NAN;
    let nan_first = vectors.append(&nan);
    let mut score = with_id(template, "bad-face-score", 4);
    score.faces[0].confidence = 2.0;
    vec![
        ("garbage".into(), garbage, "corrupt stored record"),
        ("tiny".into(), vec![1, 2, 3], "shorter than its slot"),
        ("cut-short".into(), whole[..whole.len() - 5].to_vec(), "were written"),
        ("past-the-end".into(), past_the_end, "reach past the"),
        // A slot no graph holds: the open reads and checks the vectors of exactly such records.
        ("nan-vector".into(), encode(NAN_SLOT, nan_first, &nan), "objects[0].embedding has a non-finite value"),
        ("bad-face-score".into(), encode(6, 0, &score), "faces[0].confidence = 2 is not a score"),
        ("key-of-another".into(), encode(7, 0, &with_id(template, "its-own-id", 5)), "its id is \"its-own-id\""),
        ("never-handed-out".into(), encode(10_000, 0, &with_id(template, "never-handed-out", 6)), "never handed out"),
        // Sorts after img-0005, which holds slot 5 and keeps it.
        ("zz-slot-taken".into(), encode(5, 0, &with_id(template, "zz-slot-taken", 7)), "slot 5 is already held by"),
    ]
}

/// Slots after the checkpointed records: `late-but-good` holds the first, `nan-vector` this one.
const NAN_SLOT: u64 = common::IMAGES as u64 + 1;

fn open(dir: &Path) -> EmbeddedStore {
    EmbeddedStore::open(EmbeddedConfig::new(dir)).unwrap_or_else(|e| panic!("open failed: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_quarantined_and_the_rest_opens() {
    let dir = tempfile::tempdir().unwrap();
    let mut docs = common::documents();
    {
        let store = open(dir.path());
        common::ingest(&store, &docs).await;
        store.checkpoint().unwrap();
    }
    let template = docs.iter().find(|d| !d.objects.is_empty() && !d.faces.is_empty()).unwrap().clone();
    let vectors = VectorFile::open(dir.path());
    let bad = bad_values(&template, &vectors);
    // A good record written after the checkpoint, among the bad ones: served after the open.
    let late = with_id(&template, "late-but-good", 8);
    let late_first = vectors.append(&late);
    {
        let db = Database::create(dir.path().join(RECORDS_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut records = txn.open_table(RECORDS).unwrap();
            let stored = records.get(docs[17].id.as_str()).unwrap().unwrap().value().to_vec();
            let first = u64::from_le_bytes(stored[8..16].try_into().unwrap());
            assert_eq!(stored, encode(17, first, &docs[17]), "this test's encoder no longer matches the store's");
            let stored_vectors: Vec<Vec<f32>> =
                (0..vectors_of(&docs[17]).count() as u64).map(|i| vectors.read(first + i)).collect();
            assert_eq!(stored_vectors, vectors_of(&docs[17]).cloned().collect::<Vec<_>>(), "vector file layout");
            for (key, value, _) in &bad {
                records.insert(key.as_str(), value.as_slice()).unwrap();
            }
            records.insert(late.id.as_str(), encode(common::IMAGES as u64, late_first, &late).as_slice()).unwrap();
            txn.open_table(META).unwrap().insert("next_slot", NAN_SLOT + 1).unwrap();
        }
        txn.commit().unwrap();
    }
    docs.push(late);

    let store = open(dir.path());
    assert_eq!(store.quarantined(), bad.len());
    assert_eq!(store.recovery(), IndexRecovery::Loaded { added: 1, removed: 0 });
    assert_eq!(store.count().await.unwrap(), docs.len());
    common::image_search_is_exact(&store, &docs).await;
    common::object_search_names_the_box(&store, &docs).await;
    common::face_search_finds_the_face(&store, &docs).await;
    common::get_returns_the_record(&store, &docs).await;
    assert_eq!(store.get(&docs[5].id).await.unwrap().as_ref(), Some(&docs[5]), "the holder of slot 5 is kept");
    for (key, _, _) in &bad {
        assert_eq!(store.get(key).await.unwrap(), None, "{key} is served");
    }
    drop(store);

    {
        let db = Database::create(dir.path().join(RECORDS_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        let records = txn.open_table(RECORDS).unwrap();
        assert_eq!(records.len().unwrap() as usize, docs.len(), "bad records left among the records");
        let quarantine = txn.open_table(QUARANTINE).unwrap();
        let held: Vec<(String, String, Vec<u8>)> = quarantine
            .iter()
            .unwrap()
            .map(|entry| {
                let (_, value) = entry.unwrap();
                let (id, reason, bytes) = value.value();
                (id.to_owned(), reason.to_owned(), bytes.to_vec())
            })
            .collect();
        assert_eq!(held.len(), bad.len());
        for (key, value, reason) in &bad {
            let (_, why, bytes) = held.iter().find(|(id, _, _)| id == key).unwrap_or_else(|| panic!("{key} lost"));
            assert!(why.contains(reason), "{key}: {why:?} lacks {reason:?}");
            assert_eq!(bytes, value, "{key}: quarantined bytes differ from the stored ones");
        }
    }

    let store = open(dir.path());
    assert_eq!(store.quarantined(), bad.len(), "the count survives a reopen");
    assert_eq!(store.recovery(), IndexRecovery::Loaded { added: 0, removed: 0 });
    let again = with_id(&template, "nan-vector", 9);
    assert_eq!(store.put(again.clone()).await.unwrap(), PutOutcome::Created, "a quarantined id is free again");
    assert_eq!(store.get("nan-vector").await.unwrap(), Some(again));
    assert_eq!(store.count().await.unwrap(), docs.len() + 1);
}

/// A store that opens clean reports nothing quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_store_has_nothing_in_quarantine() {
    let dir = tempfile::tempdir().unwrap();
    let docs = common::documents();
    {
        let store = open(dir.path());
        assert_eq!(store.quarantined(), 0);
        common::ingest(&store, &docs[..10]).await;
    }
    let store = open(dir.path());
    assert_eq!(store.quarantined(), 0);
    assert_eq!(store.count().await.unwrap(), 10);
}

/// A store written in the older layout (vectors inside the records) opens: every readable
/// record is moved to the current layout and served exactly (searches through rebuilt
/// graphs, `get`), an unreadable value is quarantined with its bytes, and the moved store
/// reopens from its saved graphs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_of_the_older_layout_is_moved() {
    let dir = tempfile::tempdir().unwrap();
    let docs = common::documents();
    let garbage = vec![7u8; 40];
    {
        let db = Database::create(dir.path().join(RECORDS_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("schema_version", 1).unwrap();
            meta.insert("dimension", common::DIMENSION as u64).unwrap();
            meta.insert("next_slot", docs.len() as u64).unwrap();
            let mut records = txn.open_table(LAYOUT_1_RECORDS).unwrap();
            for (slot, doc) in docs.iter().enumerate() {
                records.insert(doc.id.as_str(), encode_layout_1(slot as u64, doc).as_slice()).unwrap();
            }
            records.insert("unreadable", garbage.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.recovery(), IndexRecovery::Rebuilt);
    assert_eq!(store.quarantined(), 1);
    assert_eq!(store.count().await.unwrap(), docs.len());
    common::image_search_is_exact(&store, &docs).await;
    common::object_search_names_the_box(&store, &docs).await;
    common::face_search_finds_the_face(&store, &docs).await;
    common::get_returns_the_record(&store, &docs).await;
    drop(store);
    {
        let db = Database::create(dir.path().join(RECORDS_FILE)).unwrap();
        let txn = db.begin_read().unwrap();
        assert_eq!(txn.open_table(META).unwrap().get("schema_version").unwrap().unwrap().value(), 2);
        assert_eq!(txn.open_table(RECORDS).unwrap().len().unwrap() as usize, docs.len());
        assert!(txn.open_table(LAYOUT_1_RECORDS).is_err(), "the old table is gone");
        let quarantine = txn.open_table(QUARANTINE).unwrap();
        let (_, held) = quarantine.first().unwrap().unwrap();
        assert_eq!(held.value().0, "unreadable");
        assert_eq!(held.value().2, garbage.as_slice());
    }
    let store = open(dir.path());
    assert_eq!(store.recovery(), IndexRecovery::Loaded { added: 0, removed: 0 });
    common::image_search_is_exact(&store, &docs).await;
    common::get_returns_the_record(&store, &docs).await;
}
