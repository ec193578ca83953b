//! The store contract: one set of checks, written once against `&dyn Store`, run for the
//! embedded store and for OpenSearch. Documents are synthetic and deterministic; expected
//! results come from a brute-force cosine reference over the same vectors.

#![allow(dead_code)] // each test binary uses its own part of this module

use visual_store::matching::{best_object, summary};
use visual_store::validate::cosine;
use visual_store::{FaceRecord, ImageRecord, ObjectRecord, Page, PutOutcome, SearchFilter, Store, StoreError};

pub const DIMENSION: usize = 32;
pub const IMAGES: usize = 240;
pub const CLASSES: [&str; 4] = ["person", "dog", "car", "cat"];
pub const BASE_TIME: i64 = 1_700_000_000;
/// Exactly this many images carry the tag "rare" (the selective-filter check).
pub const RARE: usize = 12;

/// splitmix64: deterministic data without a rand dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A random direction, L2-normalised.
    pub fn unit_vector(&mut self, dimension: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dimension).map(|_| self.unit() * 2.0 - 1.0).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    /// `centre` plus a random direction of length `spread`, L2-normalised: a member of the
    /// centre's cluster.
    pub fn around(&mut self, centre: &[f32], spread: f32) -> Vec<f32> {
        let offset = self.unit_vector(centre.len());
        let v: Vec<f32> = centre.iter().zip(&offset).map(|(c, o)| c + spread * o).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }
}

/// A store's (id, score) page equals the brute-force one: the same ids in the same order,
/// every score within 1e-5 of the exact cosine.
pub fn assert_same_ranking(context: &str, got: &[(String, f32)], expected: &[(String, f32)]) {
    assert_eq!(ids(got), ids(expected), "{context}: ids differ from the exact reference");
    for ((id, score), (_, exact)) in got.iter().zip(expected) {
        assert!((score - exact).abs() <= 1e-5, "{context}: {id} scored {score}, exact cosine {exact}");
    }
}

/// An index name no other run uses (tests share one node, and delete their index at the end).
pub fn unique_index_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    format!("{prefix}-{}-{}", std::process::id(), Rng::new(nanos).next_u64() % 1_000_000)
}

pub fn image_id(i: usize) -> String {
    format!("img-{i:04}")
}

pub fn documents() -> Vec<ImageRecord> {
    let mut rng = Rng::new(7);
    (0..IMAGES)
        .map(|i| {
            let objects = (0..rng.below(4))
                .map(|_| {
                    let class = rng.below(CLASSES.len());
                    let x = rng.unit() * 500.0;
                    ObjectRecord {
                        class_id: class as u32,
                        class_name: CLASSES[class].into(),
                        confidence: (rng.unit() * 100.0).round() / 100.0,
                        bbox: [x, 10.0, x + 50.0, 90.0],
                        embedding: rng.unit_vector(DIMENSION),
                    }
                })
                .collect();
            let faces = (0..rng.below(2))
                .map(|_| FaceRecord {
                    confidence: 0.9,
                    bbox: [1.0, 2.0, 30.0, 40.0],
                    landmarks: [[5.0, 6.0]; 5],
                    embedding: rng.unit_vector(DIMENSION),
                })
                .collect();
            let mut tags: Vec<String> =
                ["beach", "city", "night"].iter().filter(|_| rng.below(2) == 0).map(|t| t.to_string()).collect();
            if i % (IMAGES / RARE) == 3 {
                tags.push("rare".into());
            }
            ImageRecord {
                id: image_id(i),
                width: 640 + i as u32,
                height: 480 - i as u32,
                created_at: BASE_TIME + i as i64 * 3600,
                tags,
                metadata: serde_json::json!({"n": i}),
                embedding: rng.unit_vector(DIMENSION),
                objects,
                faces,
            }
        })
        .collect()
}

fn object_condition(filter: &SearchFilter) -> bool {
    !filter.classes.is_empty() || filter.min_confidence > 0.0
}

fn object_passes(filter: &SearchFilter, object: &ObjectRecord) -> bool {
    !object_condition(filter)
        || ((filter.classes.is_empty() || filter.classes.contains(&object.class_name))
            && object.confidence >= filter.min_confidence)
}

/// The image-level conditions; `with_objects` false for object search, where the object
/// condition is tested on each object.
fn image_passes(filter: &SearchFilter, record: &ImageRecord, with_objects: bool) -> bool {
    filter.created_from.is_none_or(|from| record.created_at >= from)
        && filter.created_to.is_none_or(|to| record.created_at <= to)
        && filter.tags.iter().all(|t| record.tags.contains(t))
        && (!with_objects || !object_condition(filter) || record.objects.iter().any(|o| object_passes(filter, o)))
}

fn top(mut scored: Vec<(String, f32)>, page: Page) -> Vec<(String, f32)> {
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    scored.into_iter().skip(page.offset).take(page.k).collect()
}

pub fn exact_images(docs: &[ImageRecord], query: &[f32], filter: &SearchFilter, page: Page) -> Vec<(String, f32)> {
    let scored = docs
        .iter()
        .filter(|d| image_passes(filter, d, true))
        .map(|d| (d.id.clone(), cosine(query, &d.embedding)))
        .collect();
    top(scored, page)
}

/// (image id, object index) as "id#index".
pub fn exact_objects(docs: &[ImageRecord], query: &[f32], filter: &SearchFilter, page: Page) -> Vec<(String, f32)> {
    let scored = docs
        .iter()
        .filter(|d| image_passes(filter, d, false))
        .flat_map(|d| {
            d.objects
                .iter()
                .enumerate()
                .filter(|(_, o)| object_passes(filter, o))
                .map(move |(i, o)| (format!("{}#{i}", d.id), cosine(query, &o.embedding)))
        })
        .collect();
    top(scored, page)
}

/// (image id, face index) as "id#index". A face has no condition of its own: it passes
/// when its image does, object condition included (face search is image-scoped).
pub fn exact_faces(docs: &[ImageRecord], query: &[f32], filter: &SearchFilter, page: Page) -> Vec<(String, f32)> {
    let scored = docs
        .iter()
        .filter(|d| image_passes(filter, d, true))
        .flat_map(|d| {
            d.faces.iter().enumerate().map(move |(i, f)| (format!("{}#{i}", d.id), cosine(query, &f.embedding)))
        })
        .collect();
    top(scored, page)
}

fn ids(hits: &[(String, f32)]) -> Vec<String> {
    hits.iter().map(|(id, _)| id.clone()).collect()
}

fn page(k: usize, offset: usize) -> Page {
    Page { k, offset }
}

pub async fn ingest(store: &dyn Store, docs: &[ImageRecord]) {
    let outcomes = store.put_batch(docs.to_vec()).await.expect("batch put");
    assert_eq!(outcomes.len(), docs.len());
    for (outcome, doc) in outcomes.iter().zip(docs) {
        assert!(matches!(outcome, Ok(PutOutcome::Created)), "{}: {outcome:?}", doc.id);
    }
    assert_eq!(store.count().await.unwrap(), docs.len());
}

pub async fn image_search_is_exact(store: &dyn Store, docs: &[ImageRecord]) {
    let mut rng = Rng::new(11);
    for _ in 0..5 {
        let query = rng.unit_vector(DIMENSION);
        let hits = store.search_images(&query, &SearchFilter::default(), page(10, 0)).await.unwrap();
        let expected = exact_images(docs, &query, &SearchFilter::default(), page(10, 0));
        let got: Vec<String> = hits.iter().map(|h| h.image_id.clone()).collect();
        assert_eq!(got, ids(&expected), "top-10 ids differ from the exact reference");
        for (hit, (_, score)) in hits.iter().zip(&expected) {
            assert!((hit.score - score).abs() < 1e-5, "score {} is not the cosine {score}", hit.score);
        }
    }
    // The stored vector itself comes first with cosine 1.
    let hits = store.search_images(&docs[17].embedding, &SearchFilter::default(), page(1, 0)).await.unwrap();
    assert_eq!(hits[0].image_id, docs[17].id);
    assert!((hits[0].score - 1.0).abs() < 1e-5, "self-similarity {}", hits[0].score);
}

pub async fn hybrid_search_applies_every_condition(store: &dyn Store, docs: &[ImageRecord]) {
    let filter = SearchFilter {
        classes: vec!["dog".into(), "cat".into()],
        min_confidence: 0.4,
        created_from: Some(BASE_TIME + 20 * 3600),
        created_to: Some(BASE_TIME + 200 * 3600),
        tags: vec!["beach".into()],
    };
    let mut rng = Rng::new(13);
    for _ in 0..3 {
        let query = rng.unit_vector(DIMENSION);
        let expected = exact_images(docs, &query, &filter, page(10, 0));
        assert!(expected.len() >= 5, "the fixture should leave several matches, got {}", expected.len());
        let hits = store.search_images(&query, &filter, page(10, 0)).await.unwrap();
        let got: Vec<String> = hits.iter().map(|h| h.image_id.clone()).collect();
        assert_eq!(got, ids(&expected), "hybrid search differs from the exact reference");
    }
}

pub async fn object_search_names_the_box(store: &dyn Store, docs: &[ImageRecord]) {
    let (doc, index) =
        docs.iter().find_map(|d| (d.objects.len() >= 2).then_some((d, 1))).expect("an image with 2 objects");
    let target = &doc.objects[index];
    let hits = store.search_objects(&target.embedding, &SearchFilter::default(), page(5, 0)).await.unwrap();
    let first = &hits[0];
    assert_eq!((first.image_id.as_str(), first.object_index), (doc.id.as_str(), index));
    assert_eq!(first.bbox, target.bbox);
    assert_eq!(first.class_name, target.class_name);
    assert_eq!(first.confidence, target.confidence);
    assert!((first.score - 1.0).abs() < 1e-5);
    let expected = exact_objects(docs, &target.embedding, &SearchFilter::default(), page(5, 0));
    let got: Vec<String> = hits.iter().map(|h| format!("{}#{}", h.image_id, h.object_index)).collect();
    assert_eq!(got, ids(&expected), "object ranking differs from the exact reference");
    // True cosine, not a compact encoding's approximation of it.
    for (hit, (_, score)) in hits.iter().zip(&expected) {
        assert!((hit.score - score).abs() < 1e-5, "object score {} is not the cosine {score}", hit.score);
    }

    let filter = SearchFilter {
        classes: vec!["car".into()],
        min_confidence: 0.3,
        tags: vec!["city".into()],
        ..Default::default()
    };
    let hits = store.search_objects(&target.embedding, &filter, page(8, 0)).await.unwrap();
    let expected = exact_objects(docs, &target.embedding, &filter, page(8, 0));
    let got: Vec<String> = hits.iter().map(|h| format!("{}#{}", h.image_id, h.object_index)).collect();
    assert_eq!(got, ids(&expected), "filtered object search differs from the exact reference");
    assert!(hits.iter().all(|h| h.class_name == "car" && h.confidence >= 0.3));
}

pub async fn face_search_finds_the_face(store: &dyn Store, docs: &[ImageRecord]) {
    let doc = docs.iter().filter(|d| !d.faces.is_empty()).nth(3).expect("faces in the fixture");
    let hits = store.search_faces(&doc.faces[0].embedding, &SearchFilter::default(), page(3, 0)).await.unwrap();
    assert_eq!((hits[0].image_id.as_str(), hits[0].face_index), (doc.id.as_str(), 0));
    assert_eq!(hits[0].bbox, doc.faces[0].bbox);
    assert!((hits[0].score - 1.0).abs() < 1e-5);
    let query = &doc.faces[1 % doc.faces.len()].embedding;
    let hits = store.search_faces(query, &SearchFilter::default(), page(3, 0)).await.unwrap();
    let expected = exact_faces(docs, query, &SearchFilter::default(), page(3, 0));
    for (hit, (key, score)) in hits.iter().zip(&expected) {
        assert_eq!(&format!("{}#{}", hit.image_id, hit.face_index), key);
        assert!((hit.score - score).abs() < 1e-5, "face score {} is not the cosine {score}", hit.score);
    }
}

/// Hits carry what a search result shows: the record without vectors, the matched object
/// (the rule of `visual_store::matching`), the image size of object and face hits.
pub async fn hits_carry_their_records(store: &dyn Store, docs: &[ImageRecord]) {
    let doc = |id: &str| docs.iter().find(|d| d.id == id).expect("a stored id");
    let filters = [
        SearchFilter::default(),
        SearchFilter { classes: vec!["dog".into(), "car".into()], min_confidence: 0.3, ..Default::default() },
        SearchFilter { min_confidence: 0.5, tags: vec!["beach".into()], ..Default::default() },
    ];
    let mut rng = Rng::new(19);
    for filter in &filters {
        let query = rng.unit_vector(DIMENSION);
        let hits = store.search_images(&query, filter, page(40, 0)).await.unwrap();
        assert!(hits.len() >= 10, "{filter:?}: {} hits", hits.len());
        for hit in &hits {
            let record = doc(&hit.image_id);
            assert_eq!((hit.width, hit.height, hit.created_at), (record.width, record.height, record.created_at));
            assert_eq!((&hit.tags, &hit.metadata), (&record.tags, &record.metadata));
            assert_eq!(hit.objects, record.objects.iter().map(summary).collect::<Vec<_>>());
            let expected = best_object(&record.objects, &query, filter);
            match (hit.matched_object, expected) {
                (Some(got), Some(want)) => {
                    assert_eq!(got.object_index, want.object_index, "{filter:?} {}", hit.image_id);
                    assert!((got.score - want.score).abs() < 1e-4, "matched score {} vs {}", got.score, want.score);
                }
                (got, want) => assert_eq!(got, want, "{filter:?} {}", hit.image_id),
            }
        }
        if filter.classes.is_empty() && filter.min_confidence == 0.0 {
            assert!(hits.iter().any(|h| h.matched_object.is_none()), "an image without objects matches nothing");
        }
    }
    let query = rng.unit_vector(DIMENSION);
    for hit in store.search_objects(&query, &SearchFilter::default(), page(30, 0)).await.unwrap() {
        let record = doc(&hit.image_id);
        assert_eq!((hit.width, hit.height), (record.width, record.height));
    }
    for hit in store.search_faces(&query, &SearchFilter::default(), page(30, 0)).await.unwrap() {
        let record = doc(&hit.image_id);
        assert_eq!((hit.width, hit.height), (record.width, record.height));
    }
}

pub async fn pages_tile_the_ranking(store: &dyn Store, docs: &[ImageRecord]) {
    let query = Rng::new(17).unit_vector(DIMENSION);
    let filter = SearchFilter::default();
    let all: Vec<String> =
        store.search_images(&query, &filter, page(15, 0)).await.unwrap().into_iter().map(|h| h.image_id).collect();
    assert_eq!(all, ids(&exact_images(docs, &query, &filter, page(15, 0))));
    let mut joined = Vec::new();
    for offset in [0, 5, 10] {
        let hits = store.search_images(&query, &filter, page(5, offset)).await.unwrap();
        assert_eq!(hits.len(), 5);
        joined.extend(hits.into_iter().map(|h| h.image_id));
    }
    assert_eq!(joined, all, "pages overlap or leave gaps");
}

pub async fn get_returns_the_record(store: &dyn Store, docs: &[ImageRecord]) {
    let doc = docs.iter().find(|d| !d.objects.is_empty() && !d.faces.is_empty()).unwrap();
    assert_eq!(store.get(&doc.id).await.unwrap().as_ref(), Some(doc));
    assert_eq!(store.get("no-such-image").await.unwrap(), None);
}

pub async fn reingest_changes_nothing(store: &dyn Store, docs: &[ImageRecord]) {
    let mut changed = docs[5].clone();
    changed.tags = vec!["changed".into()];
    assert_eq!(store.put(changed).await.unwrap(), PutOutcome::AlreadyStored);
    assert_eq!(store.get(&docs[5].id).await.unwrap().as_ref(), Some(&docs[5]));
    let outcomes = store.put_batch(vec![docs[6].clone(), docs[6].clone()]).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Ok(PutOutcome::AlreadyStored))), "{outcomes:?}");
    assert_eq!(store.count().await.unwrap(), docs.len());
}

pub async fn selective_filter_fills_the_page(store: &dyn Store, docs: &[ImageRecord]) {
    let filter = SearchFilter { tags: vec!["rare".into()], ..Default::default() };
    let query = Rng::new(19).unit_vector(DIMENSION);
    let hits = store.search_images(&query, &filter, page(10, 0)).await.unwrap();
    assert_eq!(hits.len(), 10, "{RARE} images match, k = 10");
    let got: Vec<String> = hits.into_iter().map(|h| h.image_id).collect();
    assert_eq!(got, ids(&exact_images(docs, &query, &filter, page(10, 0))));
}

pub async fn invalid_queries_are_rejected(store: &dyn Store) {
    let query = Rng::new(23).unit_vector(DIMENSION);
    let filter = SearchFilter::default();
    let mut nan = query.clone();
    nan[3] = f32::NAN;
    let cases: [(&[f32], Page, &str); 4] = [
        (&query, page(0, 0), "k must be at least 1"),
        (&query, page(100_000, 0), "exceeds the maximum"),
        (&query[..DIMENSION - 1], page(10, 0), "dimensions"),
        (&nan, page(10, 0), "non-finite"),
    ];
    for (query, page, reason) in cases {
        match store.search_images(query, &filter, page).await {
            Err(StoreError::InvalidQuery(message)) => assert!(message.contains(reason), "{message:?} lacks {reason:?}"),
            other => panic!("expected InvalidQuery({reason}), got {other:?}"),
        }
        assert!(matches!(store.search_objects(query, &filter, page).await, Err(StoreError::InvalidQuery(_))));
    }
}

/// A record with one bad float (a vector, a score, a box, a landmark) is refused naming
/// the field, alone or in a batch, and nothing of it is stored.
pub async fn invalid_records_are_refused(store: &dyn Store, docs: &[ImageRecord]) {
    let template = docs.iter().find(|d| !d.objects.is_empty() && !d.faces.is_empty()).expect("objects and faces");
    type Change = fn(&mut ImageRecord);
    let cases: [(Change, &str); 8] = [
        (|r| r.objects[0].embedding[0] = f32::NAN, "objects[0].embedding has a non-finite value"),
        (|r| r.objects[0].confidence = f32::NAN, "objects[0].confidence = NaN"),
        (|r| r.objects[0].bbox[0] = f32::INFINITY, "objects[0].bbox.x1 = inf"),
        (|r| r.objects[0].bbox = [9.0, 1.0, 8.0, 2.0], "objects[0].bbox = [9.0, 1.0, 8.0, 2.0] has x1 > x2"),
        (|r| r.faces[0].confidence = 1.25, "faces[0].confidence = 1.25"),
        (|r| r.faces[0].bbox[3] = f32::NAN, "faces[0].bbox.y2 = NaN"),
        (|r| r.faces[0].landmarks[2][1] = f32::NEG_INFINITY, "faces[0].landmarks[2].y = -inf"),
        (|r| r.faces[0].embedding[5] = f32::INFINITY, "faces[0].embedding has a non-finite value"),
    ];
    let bad: Vec<(ImageRecord, &str)> = cases
        .iter()
        .enumerate()
        .map(|(i, (change, reason))| {
            let mut record = template.clone();
            record.id = format!("invalid-{i}");
            change(&mut record);
            (record, *reason)
        })
        .collect();
    let expect_refused = |outcome: &visual_store::Result<PutOutcome>, reason: &str| match outcome {
        Err(StoreError::InvalidRecord(message)) => assert!(message.contains(reason), "{message:?} lacks {reason:?}"),
        other => panic!("expected InvalidRecord({reason}), got {other:?}"),
    };
    let outcomes = store.put_batch(bad.iter().map(|(record, _)| record.clone()).collect()).await.unwrap();
    assert_eq!(outcomes.len(), bad.len());
    for (outcome, (_, reason)) in outcomes.iter().zip(&bad) {
        expect_refused(outcome, reason);
    }
    for (record, reason) in &bad {
        expect_refused(&store.put(record.clone()).await, reason);
        assert_eq!(store.get(&record.id).await.unwrap(), None, "{} was stored", record.id);
    }
    assert_eq!(store.count().await.unwrap(), docs.len());
}

/// Last, since it changes the data: a deleted image is gone from get, search and count.
pub async fn delete_removes_everywhere(store: &dyn Store, docs: &[ImageRecord]) {
    let doc = docs.iter().find(|d| !d.objects.is_empty()).unwrap();
    assert!(store.delete(&doc.id).await.unwrap());
    assert!(!store.delete(&doc.id).await.unwrap(), "second delete reports nothing deleted");
    assert_eq!(store.get(&doc.id).await.unwrap(), None);
    let hits = store.search_images(&doc.embedding, &SearchFilter::default(), page(5, 0)).await.unwrap();
    assert!(hits.iter().all(|h| h.image_id != doc.id), "deleted image still found");
    let objects = store.search_objects(&doc.objects[0].embedding, &SearchFilter::default(), page(5, 0)).await.unwrap();
    assert!(objects.iter().all(|h| h.image_id != doc.id), "deleted image's object still found");
    assert_eq!(store.count().await.unwrap(), docs.len() - 1);
}

/// The whole contract in order, naming each check as it runs.
pub async fn run_contract(store: &dyn Store) {
    let docs = documents();
    macro_rules! check {
        ($name:ident $(, $arg:expr)*) => {{
            eprintln!("[{}] {}", store.kind(), stringify!($name));
            $name(store $(, $arg)*).await;
        }};
    }
    check!(ingest, &docs);
    check!(image_search_is_exact, &docs);
    check!(hybrid_search_applies_every_condition, &docs);
    check!(object_search_names_the_box, &docs);
    check!(face_search_finds_the_face, &docs);
    check!(hits_carry_their_records, &docs);
    check!(pages_tile_the_ranking, &docs);
    check!(get_returns_the_record, &docs);
    check!(reingest_changes_nothing, &docs);
    check!(selective_filter_fills_the_page, &docs);
    check!(invalid_queries_are_rejected);
    check!(invalid_records_are_refused, &docs);
    check!(delete_removes_everywhere, &docs);
}
