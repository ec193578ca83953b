//! OpenSearch-only checks on a real node (`OPENSEARCH_URL`; without it each test prints a
//! SKIPPED line and passes): HNSW recall at 10,000 image vectors against brute force, and
//! the per-item results of a `_bulk` holding records that only OpenSearch refuses.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::time::Instant;

use common::Rng;
use visual_store::opensearch::{OpenSearchConfig, OpenSearchStore};
use visual_store::validate::cosine;
use visual_store::{ImageRecord, ObjectRecord, Page, PutOutcome, SearchFilter, Store, StoreError};

fn opensearch_url(test: &str) -> Option<String> {
    let url = std::env::var("OPENSEARCH_URL").ok();
    if url.is_none() {
        println!("SKIPPED {test}: OPENSEARCH_URL is not set");
        eprintln!("SKIPPED {test}: OPENSEARCH_URL is not set");
    }
    url
}

/// Runs `check` against a store over a fresh index, then deletes the index, also when
/// the check panics (the panic is re-raised after the cleanup).
async fn with_fresh_index<F, Fut>(url: &str, prefix: &str, dimension: usize, check: F)
where
    F: FnOnce(OpenSearchStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let index = common::unique_index_name(prefix);
    let store = OpenSearchStore::connect(OpenSearchConfig::new(url, &index, dimension)).await.unwrap();
    let outcome = tokio::spawn(check(store.clone())).await;
    store.delete_index().await.unwrap();
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic.into_panic());
    }
}

fn record(id: String, embedding: Vec<f32>, tags: Vec<String>) -> ImageRecord {
    ImageRecord {
        id,
        width: 640,
        height: 480,
        created_at: common::BASE_TIME,
        tags,
        metadata: serde_json::json!({}),
        embedding,
        objects: vec![],
        faces: vec![],
    }
}

const RECALL_IMAGES: usize = 10_000;
/// The CLIP image embedding's length, as the gateway stores it.
const RECALL_DIMENSION: usize = 512;
const RECALL_QUERIES: usize = 50;
const RECALL_K: usize = 10;
const MIN_RECALL: f64 = 0.95;
/// Records per `put_batch` (one `_bulk` request of about 5 MB).
const BULK_BATCH: usize = 1_000;
/// Image embeddings cluster by subject: each vector is one of this many random centres plus
/// a random offset of the same length (cosine about 0.5 to its centre and within a cluster).
const RECALL_CLUSTERS: usize = 200;
/// Every 20th image carries the tag "selective" (500 of 10,000): enough that Lucene runs
/// the filtered HNSW search rather than an exact scan of the matches.
const SELECTIVE_EVERY: usize = 20;

/// Ids of the `k` images nearest to `query` by exact cosine among those `keep` accepts.
fn exact_top<'a>(images: &'a [ImageRecord], query: &[f32], keep: impl Fn(&ImageRecord) -> bool, k: usize) -> Vec<&'a str> {
    let mut scored: Vec<(&str, f32)> =
        images.iter().filter(|image| keep(image)).map(|image| (image.id.as_str(), cosine(query, &image.embedding))).collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    scored.into_iter().take(k).map(|(id, _)| id).collect()
}

/// Mean recall@k of the store's search over `queries`; every search must return k hits,
/// all accepted by `keep`.
async fn measured_recall(
    store: &OpenSearchStore,
    images: &[ImageRecord],
    queries: &[Vec<f32>],
    filter: &SearchFilter,
    keep: impl Fn(&ImageRecord) -> bool + Copy,
) -> f64 {
    let accepted: HashSet<&str> = images.iter().filter(|image| keep(image)).map(|image| image.id.as_str()).collect();
    let mut found = 0;
    for query in queries {
        let hits = store.search_images(query, filter, Page { k: RECALL_K, offset: 0 }).await.unwrap();
        assert_eq!(hits.len(), RECALL_K, "a search returned fewer than k hits");
        let exact = exact_top(images, query, keep, RECALL_K);
        assert!(hits.iter().all(|hit| accepted.contains(hit.image_id.as_str())), "a hit fails the filter");
        found += hits.iter().filter(|hit| exact.contains(&hit.image_id.as_str())).count();
    }
    found as f64 / (queries.len() * RECALL_K) as f64
}

/// A vector near one of the centres, L2-normalised.
fn clustered_vector(rng: &mut Rng, centres: &[Vec<f32>]) -> Vec<f32> {
    let centre = &centres[rng.below(centres.len())];
    let offset = rng.unit_vector(RECALL_DIMENSION);
    let sum: Vec<f32> = centre.iter().zip(&offset).map(|(c, o)| c + o).collect();
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt();
    sum.into_iter().map(|x| x / norm).collect()
}

/// Clustered vectors (as image embeddings are; on isotropic random 512-d vectors, HNSW's
/// worst case, the same search measured 0.88), ingested through the store's own
/// `put_batch` in `_bulk` requests of 1,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_hnsw_recall_at_10_000_vectors() {
    let Some(url) = opensearch_url("opensearch_hnsw_recall_at_10_000_vectors") else { return };
    let mut rng = Rng::new(29);
    let centres: Vec<Vec<f32>> = (0..RECALL_CLUSTERS).map(|_| rng.unit_vector(RECALL_DIMENSION)).collect();
    let images: Vec<ImageRecord> = (0..RECALL_IMAGES)
        .map(|i| {
            let tags = if i % SELECTIVE_EVERY == 0 { vec!["selective".to_string()] } else { vec![] };
            record(format!("vec-{i:05}"), clustered_vector(&mut rng, &centres), tags)
        })
        .collect();
    let queries: Vec<Vec<f32>> = (0..RECALL_QUERIES).map(|_| clustered_vector(&mut rng, &centres)).collect();
    with_fresh_index(&url, "visual-store-recall", RECALL_DIMENSION, move |store| async move {
        let started = Instant::now();
        for batch in images.chunks(BULK_BATCH) {
            let outcomes = store.put_batch(batch.to_vec()).await.unwrap();
            assert!(outcomes.iter().all(|o| matches!(o, Ok(PutOutcome::Created))), "a record of the batch failed");
        }
        assert_eq!(store.count().await.unwrap(), RECALL_IMAGES);
        let indexing = started.elapsed();

        let started = Instant::now();
        let unfiltered = measured_recall(&store, &images, &queries, &SearchFilter::default(), |_| true).await;
        let selective = SearchFilter { tags: vec!["selective".into()], ..Default::default() };
        let filtered = measured_recall(&store, &images, &queries, &selective, |image| !image.tags.is_empty()).await;
        let searching = started.elapsed();
        println!(
            "recall@{RECALL_K} over {RECALL_QUERIES} queries, {RECALL_IMAGES} x {RECALL_DIMENSION}-d: unfiltered {unfiltered:.3}, \
             filter matching {} images {filtered:.3}; indexing {indexing:.1?}, {} searches {searching:.1?}",
            RECALL_IMAGES / SELECTIVE_EVERY,
            2 * RECALL_QUERIES,
        );
        assert!(unfiltered >= MIN_RECALL, "unfiltered recall@{RECALL_K} = {unfiltered:.3} < {MIN_RECALL}");
        assert!(filtered >= MIN_RECALL, "filtered recall@{RECALL_K} = {filtered:.3} < {MIN_RECALL}");
    })
    .await;
}

const BULK_DIMENSION: usize = 4;
/// OpenSearch's default `index.mapping.nested_objects.limit`; the store's own limit on
/// objects per image (`validate::MAX_PARTS_PER_IMAGE`) is higher.
const NESTED_OBJECTS_LIMIT: usize = 10_000;

/// One `put_batch` mixing good records, a record the store's validation refuses, and two
/// that pass it but OpenSearch refuses per item: a tag longer than Lucene's 32,766-byte
/// term limit, and more nested objects than the index allows. Each gets its own result;
/// the good ones are stored and searchable, the refused ones are not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_bulk_reports_each_failed_item() {
    let Some(url) = opensearch_url("opensearch_bulk_reports_each_failed_item") else { return };
    let mut rng = Rng::new(31);
    let good: Vec<ImageRecord> = (0..2).map(|i| record(format!("good-{i}"), rng.unit_vector(BULK_DIMENSION), vec![])).collect();
    let immense_tag = record("immense-tag".into(), rng.unit_vector(BULK_DIMENSION), vec!["x".repeat(40_000)]);
    let mut too_many_objects = record("too-many-objects".into(), rng.unit_vector(BULK_DIMENSION), vec![]);
    too_many_objects.objects = (0..=NESTED_OBJECTS_LIMIT)
        .map(|_| ObjectRecord {
            class_id: 0,
            class_name: "person".into(),
            confidence: 0.9,
            bbox: [0.0, 0.0, 10.0, 10.0],
            embedding: rng.unit_vector(BULK_DIMENSION),
        })
        .collect();
    let wrong_dimension = record("wrong-dimension".into(), rng.unit_vector(BULK_DIMENSION + 1), vec![]);
    let batch = vec![good[0].clone(), immense_tag, wrong_dimension, too_many_objects, good[1].clone()];

    with_fresh_index(&url, "visual-store-bulk", BULK_DIMENSION, move |store| async move {
        let outcomes = store.put_batch(batch).await.expect("the bulk request itself succeeds");
        assert_eq!(outcomes.len(), 5);
        assert!(matches!(outcomes[0], Ok(PutOutcome::Created)), "{:?}", outcomes[0]);
        assert!(matches!(outcomes[4], Ok(PutOutcome::Created)), "{:?}", outcomes[4]);
        let refused = |index: usize, reasons: &[&str]| match &outcomes[index] {
            Err(StoreError::InvalidRecord(message)) => {
                println!("item {index}: {message}");
                for reason in reasons {
                    assert!(message.contains(reason), "{message:?} lacks {reason:?}");
                }
            }
            other => panic!("item {index}: expected InvalidRecord({reasons:?}), got {other:?}"),
        };
        refused(1, &["\"immense-tag\"", "immense term in field=\\\"tags\\\""]);
        refused(2, &["\"wrong-dimension\"", "has 5 dimensions, expected 4"]);
        refused(3, &["\"too-many-objects\"", "The number of nested documents has exceeded the allowed limit of [10000]"]);

        assert_eq!(store.count().await.unwrap(), 2);
        for doc in &good {
            assert_eq!(store.get(&doc.id).await.unwrap().as_ref(), Some(doc));
            let hits = store.search_images(&doc.embedding, &SearchFilter::default(), Page { k: 1, offset: 0 }).await.unwrap();
            assert_eq!(hits[0].image_id, doc.id);
            assert!((hits[0].score - 1.0).abs() < 1e-3, "self-similarity {}", hits[0].score);
        }
        for id in ["immense-tag", "wrong-dimension", "too-many-objects"] {
            assert_eq!(store.get(id).await.unwrap(), None, "{id} was stored");
        }
    })
    .await;
}
