//! OpenSearch-only checks on a real node (`OPENSEARCH_URL`) and again on a three-node cluster
//! (`OPENSEARCH_CLUSTER_URLS`, comma-separated; the `opensearch_cluster_*` tests), both started
//! by the test command (without them each test fails under the test command and is reported
//! skipped elsewhere): HNSW recall at 10,000 image vectors against brute force,
//! the per-item results of a `_bulk` holding records that only OpenSearch refuses, and
//! object and face search up to a `max_k` above OpenSearch's default inner-hits window of
//! 100 (on a new index and on one created with the default window). And,
//! with no node at all, what the store answers when nothing listens (a stopped node), a
//! listener never answers (a hung one), or a node answers 503 while its shards recover (a
//! restarted one, imitated with OpenSearch's own answers): `Unavailable` every time.

mod common;

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use common::Rng;
use opensearch::http::transport::Transport;
use opensearch::indices::{IndicesCreateParts, IndicesGetSettingsParts};
use opensearch::OpenSearch;
use visual_store::opensearch::{query, split_urls, IndexSettings, OpenSearchConfig, OpenSearchStore};
use visual_store::validate::cosine;
use visual_store::{
    FaceRecord, ImageRecord, ObjectRecord, Page, PutOutcome, QueryLimits, SearchFilter, Store, StoreError,
};

/// The single node's URL.
const NODE: &str = "OPENSEARCH_URL";
/// The cluster's node URLs, comma-separated.
const CLUSTER: &str = "OPENSEARCH_CLUSTER_URLS";

/// The URLs in the variable `var` (`NODE` or `CLUSTER`); None, after reporting `test`
/// unavailable, when it is not set.
fn urls_from(var: &str, test: &str) -> Option<String> {
    let urls = std::env::var(var).ok();
    if urls.is_none() {
        test_skip::unavailable(test, &format!("{var} is not set"));
    }
    urls
}

/// Runs `check` against a store over a fresh index, then deletes the index, also when
/// the check panics (the panic is re-raised after the cleanup).
async fn with_fresh_index<F, Fut>(url: &str, prefix: &str, dimension: usize, check: F)
where
    F: FnOnce(OpenSearchStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let index = common::unique_index_name(prefix);
    with_store(OpenSearchConfig::new(url, &index, dimension), check).await;
}

/// Runs `check` against a store connected with `config`, then deletes its index, also when
/// the check panics (the panic is re-raised after the cleanup).
async fn with_store<F, Fut>(config: OpenSearchConfig, check: F)
where
    F: FnOnce(OpenSearchStore) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let store = OpenSearchStore::connect(config).await.unwrap();
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
fn exact_top<'a>(
    images: &'a [ImageRecord],
    query: &[f32],
    keep: impl Fn(&ImageRecord) -> bool,
    k: usize,
) -> Vec<&'a str> {
    let mut scored: Vec<(&str, f32)> = images
        .iter()
        .filter(|image| keep(image))
        .map(|image| (image.id.as_str(), cosine(query, &image.embedding)))
        .collect();
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
    rng.around(centre, 1.0)
}

/// Clustered vectors (as image embeddings are; on isotropic random 512-d vectors, HNSW's
/// worst case, the same search measured 0.88), ingested through the store's own
/// `put_batch` in `_bulk` requests of 1,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_hnsw_recall_at_10_000_vectors() {
    if let Some(url) = urls_from(NODE, "opensearch_hnsw_recall_at_10_000_vectors") {
        hnsw_recall_at_10_000_vectors(&url).await;
    }
}

/// The same over 2 shards on three nodes: each shard's graph holds about half the vectors,
/// and the k best of both are merged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_cluster_hnsw_recall_at_10_000_vectors() {
    if let Some(urls) = urls_from(CLUSTER, "opensearch_cluster_hnsw_recall_at_10_000_vectors") {
        hnsw_recall_at_10_000_vectors(&urls).await;
    }
}

async fn hnsw_recall_at_10_000_vectors(urls: &str) {
    let mut rng = Rng::new(29);
    let centres: Vec<Vec<f32>> = (0..RECALL_CLUSTERS).map(|_| rng.unit_vector(RECALL_DIMENSION)).collect();
    let images: Vec<ImageRecord> = (0..RECALL_IMAGES)
        .map(|i| {
            let tags = if i % SELECTIVE_EVERY == 0 { vec!["selective".to_string()] } else { vec![] };
            record(format!("vec-{i:05}"), clustered_vector(&mut rng, &centres), tags)
        })
        .collect();
    let queries: Vec<Vec<f32>> = (0..RECALL_QUERIES).map(|_| clustered_vector(&mut rng, &centres)).collect();
    with_fresh_index(urls, "visual-store-recall", RECALL_DIMENSION, move |store| async move {
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
    if let Some(url) = urls_from(NODE, "opensearch_bulk_reports_each_failed_item") {
        bulk_reports_each_failed_item(&url).await;
    }
}

/// The same when the items of one `_bulk` land on shards whose primaries are on different nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_cluster_bulk_reports_each_failed_item() {
    if let Some(urls) = urls_from(CLUSTER, "opensearch_cluster_bulk_reports_each_failed_item") {
        bulk_reports_each_failed_item(&urls).await;
    }
}

async fn bulk_reports_each_failed_item(urls: &str) {
    let mut rng = Rng::new(31);
    let good: Vec<ImageRecord> =
        (0..2).map(|i| record(format!("good-{i}"), rng.unit_vector(BULK_DIMENSION), vec![])).collect();
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

    with_fresh_index(urls, "visual-store-bulk", BULK_DIMENSION, move |store| async move {
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
        refused(
            3,
            &["\"too-many-objects\"", "The number of nested documents has exceeded the allowed limit of [10000]"],
        );

        assert_eq!(store.count().await.unwrap(), 2);
        for doc in &good {
            assert_eq!(store.get(&doc.id).await.unwrap().as_ref(), Some(doc));
            let hits =
                store.search_images(&doc.embedding, &SearchFilter::default(), Page { k: 1, offset: 0 }).await.unwrap();
            assert_eq!(hits[0].image_id, doc.id);
            assert!((hits[0].score - 1.0).abs() < 1e-3, "self-similarity {}", hits[0].score);
        }
        for id in ["immense-tag", "wrong-dimension", "too-many-objects"] {
            assert_eq!(store.get(id).await.unwrap(), None, "{id} was stored");
        }
    })
    .await;
}

const PARTS_DIMENSION: usize = 16;
const PARTS_IMAGES: usize = 120;
/// Above OpenSearch's default inner-hits window (`index.max_inner_result_window`, 100).
const PARTS_MAX_K: usize = 300;
/// Objects of the first image: more than 100 of one image's parts rank in the top
/// `PARTS_MAX_K`, so one image's inner hits really exceed the default window.
const CROWDED_OBJECTS: usize = 400;

fn parts_limits() -> QueryLimits {
    QueryLimits { max_k: PARTS_MAX_K, max_window: 2 * PARTS_MAX_K }
}

/// 4 objects and 3 faces per image (the first image: `CROWDED_OBJECTS` objects).
fn parts_images() -> Vec<ImageRecord> {
    let mut rng = Rng::new(37);
    (0..PARTS_IMAGES)
        .map(|i| {
            let mut image = record(format!("parts-{i:03}"), rng.unit_vector(PARTS_DIMENSION), vec![]);
            let objects = if i == 0 { CROWDED_OBJECTS } else { 4 };
            image.objects = (0..objects)
                .map(|o| ObjectRecord {
                    class_id: 0,
                    class_name: "person".into(),
                    confidence: 0.5,
                    bbox: [o as f32, 0.0, o as f32 + 10.0, 10.0],
                    embedding: rng.unit_vector(PARTS_DIMENSION),
                })
                .collect();
            image.faces = (0..3)
                .map(|f| FaceRecord {
                    confidence: 0.9,
                    bbox: [f as f32, 0.0, f as f32 + 5.0, 5.0],
                    landmarks: [[1.0, 1.0]; 5],
                    embedding: rng.unit_vector(PARTS_DIMENSION),
                })
                .collect();
            image
        })
        .collect()
}

/// Ranked parts from a search, as (image id, index, score), against the exact cosines of
/// `vectors` (image id, index, vector): the page is the exact ranking's slice (scores within
/// 1e-4 rank by rank; each hit's score is its own part's cosine), with no part twice.
fn assert_exact_parts(
    kind: &str,
    hits: &[(String, usize, f32)],
    vectors: &[(String, usize, &[f32])],
    query: &[f32],
    page: Page,
) {
    let mut exact: Vec<f32> = vectors.iter().map(|(_, _, v)| cosine(query, v)).collect();
    exact.sort_by(|a, b| b.total_cmp(a));
    let expected = &exact[page.offset.min(exact.len())..(page.offset + page.k).min(exact.len())];
    assert_eq!(hits.len(), expected.len(), "{kind} {page:?}: hit count");
    let mut seen = HashSet::new();
    for (rank, ((image_id, index, score), want)) in hits.iter().zip(expected).enumerate() {
        assert!((score - want).abs() < 1e-4, "{kind} {page:?} rank {rank}: score {score}, exact {want}");
        let (_, _, vector) = vectors.iter().find(|(id, i, _)| id == image_id && i == index).expect("a stored part");
        assert!((score - cosine(query, vector)).abs() < 1e-4, "{kind} {image_id}#{index}: wrong score {score}");
        assert!(seen.insert((image_id.clone(), *index)), "{kind} {image_id}#{index} returned twice");
    }
}

/// Object and face searches at `PARTS_MAX_K` (and the page after it) equal the exact ranking.
async fn part_searches_reach_max_k(store: OpenSearchStore, images: Vec<ImageRecord>) {
    let outcomes = store.put_batch(images.clone()).await.unwrap();
    assert!(outcomes.iter().all(|o| matches!(o, Ok(PutOutcome::Created))), "{outcomes:?}");
    let objects: Vec<(String, usize, &[f32])> = images
        .iter()
        .flat_map(|im| im.objects.iter().enumerate().map(|(i, o)| (im.id.clone(), i, &o.embedding[..])))
        .collect();
    let faces: Vec<(String, usize, &[f32])> = images
        .iter()
        .flat_map(|im| im.faces.iter().enumerate().map(|(i, f)| (im.id.clone(), i, &f.embedding[..])))
        .collect();
    let mut rng = Rng::new(41);
    let mut crowded_hits = 0;
    for _ in 0..3 {
        let query = rng.unit_vector(PARTS_DIMENSION);
        for page in [Page { k: PARTS_MAX_K, offset: 0 }, Page { k: PARTS_MAX_K, offset: PARTS_MAX_K }] {
            let hits = store.search_objects(&query, &SearchFilter::default(), page).await.unwrap();
            let hits: Vec<_> = hits.into_iter().map(|h| (h.image_id, h.object_index, h.score)).collect();
            assert_exact_parts("objects", &hits, &objects, &query, page);
            if page.offset == 0 {
                crowded_hits = hits.iter().filter(|(id, _, _)| id == &images[0].id).count();
            }
            let hits = store.search_faces(&query, &SearchFilter::default(), page).await.unwrap();
            let hits: Vec<_> = hits.into_iter().map(|h| (h.image_id, h.face_index, h.score)).collect();
            assert_exact_parts("faces", &hits, &faces, &query, page);
        }
        assert!(crowded_hits > 100, "one image should give more than 100 object hits, gave {crowded_hits}");
    }
}

/// Object and face search up to `max_k` above OpenSearch's default inner-hits window of 100,
/// on an index the store creates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_part_search_reaches_max_k() {
    if let Some(url) = urls_from(NODE, "opensearch_part_search_reaches_max_k") {
        part_search_on_a_new_index(&url).await;
    }
}

/// The same over 2 shards on three nodes: each shard's inner hits are merged into one ranking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_cluster_part_search_reaches_max_k() {
    if let Some(urls) = urls_from(CLUSTER, "opensearch_cluster_part_search_reaches_max_k") {
        part_search_on_a_new_index(&urls).await;
    }
}

async fn part_search_on_a_new_index(urls: &str) {
    let index = common::unique_index_name("visual-store-parts");
    let config = OpenSearchConfig { limits: parts_limits(), ..OpenSearchConfig::new(urls, &index, PARTS_DIMENSION) };
    with_store(config, |store| part_searches_reach_max_k(store, parts_images())).await;
}

/// The same on an index created with OpenSearch's default inner-hits window (as a build
/// before the setting made it): the store raises the window when it checks the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_part_search_raises_an_older_index_window() {
    if let Some(url) = urls_from(NODE, "opensearch_part_search_raises_an_older_index_window") {
        part_search_on_an_older_index(&url).await;
    }
}

/// The same on the cluster: the raised window is a setting of the whole index, every shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_cluster_part_search_raises_an_older_index_window() {
    if let Some(urls) = urls_from(CLUSTER, "opensearch_cluster_part_search_raises_an_older_index_window") {
        part_search_on_an_older_index(&urls).await;
    }
}

async fn part_search_on_an_older_index(urls: &str) {
    let index = common::unique_index_name("visual-store-parts-older");
    // The older index is created through the first node; the store then uses them all.
    let client = OpenSearch::new(Transport::single_node(&split_urls(urls)[0]).unwrap());
    let mut body = query::create_index(PARTS_DIMENSION, parts_limits().max_window, &IndexSettings::default());
    body["settings"]["index"].as_object_mut().unwrap().remove("max_inner_result_window");
    let created = client.indices().create(IndicesCreateParts::Index(&index)).body(body).send().await.unwrap();
    assert_eq!(created.status_code().as_u16(), 200, "{:?}", created.text().await);
    let (client, index_name) = (&client, index.as_str());
    let window = || async move {
        let answer = client
            .indices()
            .get_settings(IndicesGetSettingsParts::IndexName(&[index_name], &[query::INNER_WINDOW_SETTING]))
            .flat_settings(true)
            .include_defaults(true)
            .send()
            .await
            .unwrap();
        query::inner_window_of(&answer.json().await.unwrap())
    };
    assert_eq!(window().await, Some(100), "the index should start with the default window");
    let config = OpenSearchConfig { limits: parts_limits(), ..OpenSearchConfig::new(urls, &index, PARTS_DIMENSION) };
    let checked = OpenSearchStore::connect(config.clone()).await;
    let raised = window().await;
    with_store(config, move |store| async move {
        checked.expect("connect to the older index");
        assert_eq!(raised, Some(2 * PARTS_MAX_K), "the store should raise the window to its result window");
        part_searches_reach_max_k(store, parts_images()).await
    })
    .await;
}

/// A loopback port where nothing listens (bound, then closed): connections are refused.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn within_10s<T>(call: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), call).await.expect("no answer within 10 s")
}

fn assert_unavailable<T: std::fmt::Debug>(answer: visual_store::Result<T>, needle: &str) {
    match answer {
        Err(StoreError::Unavailable(message)) => assert!(message.contains(needle), "{message:?} lacks {needle:?}"),
        other => panic!("expected Unavailable({needle:?}), got {other:?}"),
    }
}

/// A stopped node (connection refused): every call is `Unavailable` naming the call, refused
/// rather than timed out (the request timeout is far beyond the test's own 10 s bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_stopped_node_is_unavailable_at_once() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let config = OpenSearchConfig {
        request_timeout: Duration::from_secs(60),
        ..OpenSearchConfig::new(&url, "nowhere", BULK_DIMENSION)
    };
    let store = OpenSearchStore::new(config).unwrap();
    assert_unavailable(within_10s(store.count()).await, "opensearch index exists: no answer");
    let put = store.put_batch(vec![record("a".into(), vec![1.0, 0.0, 0.0, 0.0], vec![])]);
    assert_unavailable(within_10s(put).await, "opensearch index exists: no answer");
}

/// A hung node (accepts, never answers): every call is `Unavailable` after `request_timeout`,
/// not a wait for ever (without the timeout the calls below fail on the test's own 10 s bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_hung_node_times_out_as_unavailable() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // Accepts and holds every connection without reading or answering.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    let timeout = Duration::from_millis(800);
    let config = OpenSearchConfig { request_timeout: timeout, ..OpenSearchConfig::new(&url, "hung", BULK_DIMENSION) };
    let store = OpenSearchStore::new(config).unwrap();
    for _ in 0..2 {
        assert_unavailable(within_10s(store.ready()).await, "opensearch index exists: timed out");
    }
    let query = [1.0, 0.0, 0.0, 0.0];
    let no_filter = SearchFilter::default();
    let search = store.search_faces(&query, &no_filter, Page { k: 1, offset: 0 });
    assert_unavailable(within_10s(search).await, ": timed out");
}

/// What a restarted node answers (checked on 2.19.1) between opening its HTTP port and
/// recovering its shards, for a get; searches and counts say "all shards failed", also 503.
const NO_SHARD: &str = r#"{"error":{"root_cause":[{"type":"no_shard_available_action_exception","reason":"No shard available for [get [recovering][a]: routing [null]]"}],"type":"no_shard_available_action_exception","reason":"No shard available for [get [recovering][a]: routing [null]]"},"status":503}"#;

/// A loopback HTTP server answering each request with `answer(method, path, body)` =
/// (status, JSON body), one request per connection; returns its URL.
fn fake_node(answer: fn(&str, &str, &str) -> (u16, String)) -> String {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let mut parts = request_line.split_whitespace();
            let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let (status, json) = answer(method, path, &String::from_utf8_lossy(&body));
            let response = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}",
                json.len()
            );
            let _ = reader.get_mut().write_all(response.as_bytes());
        }
    });
    url
}

/// A restarted node whose shards are not recovered yet: the index and its mapping are there
/// (cluster state), every read and write answers 503. The store says `Unavailable` (the
/// gateway's 503), not `Io` (500); a `_bulk` that is answered with 503 items fails those items
/// as `Unavailable` too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_recovering_node_is_unavailable() {
    let url = fake_node(|method, path, body| {
        let meta = format!(
            r#"{{"recovering":{{"mappings":{{"_meta":{{"schema_version":1,"dimension":{BULK_DIMENSION}}}}}}}}}"#
        );
        match (method, path.split('?').next().unwrap_or("")) {
            ("HEAD", "/recovering") => (200, String::new()),
            ("GET", "/recovering/_mapping") => (200, meta),
            ("GET", "/recovering/_settings/index.max_inner_result_window") => {
                (200, r#"{"recovering":{"settings":{"index.max_inner_result_window":"10000"}}}"#.to_string())
            }
            ("POST", "/_bulk") if body.contains("item-503") => {
                let item = r#"{"create":{"_index":"recovering","_id":"item-503","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}}"#;
                (200, format!(r#"{{"took":1,"errors":true,"items":[{item}]}}"#))
            }
            _ => (503, NO_SHARD.to_string()),
        }
    });
    let store = OpenSearchStore::new(OpenSearchConfig::new(&url, "recovering", BULK_DIMENSION)).unwrap();
    store.ensure_index().await.expect("the mapping is readable while the shards recover");
    let query = [1.0, 0.0, 0.0, 0.0];
    let page = Page { k: 1, offset: 0 };
    assert_unavailable(store.get("a").await, "no_shard_available_action_exception");
    assert_unavailable(store.count().await, "HTTP 503");
    assert_unavailable(
        store.search_images(&query, &SearchFilter::default(), page).await,
        "opensearch search: HTTP 503",
    );
    assert_unavailable(store.search_faces(&query, &SearchFilter::default(), page).await, "opensearch search: HTTP 503");
    assert_unavailable(store.delete("a").await, "opensearch delete: HTTP 503");
    assert_unavailable(
        store.put_batch(vec![record("a".into(), query.to_vec(), vec![])]).await,
        "opensearch bulk: HTTP 503",
    );
    let outcomes = store.put_batch(vec![record("item-503".into(), query.to_vec(), vec![])]).await.unwrap();
    assert_unavailable(outcomes.into_iter().next().unwrap(), "\"item-503\" failed (status 503)");
}
