//! Filtered search when every match lies far from the query: a query among 1,500 images
//! whose filter passes only 300 images of another cluster. A filter tested inside the
//! graph traversal then walks the query's whole cluster before it finds a match; past its
//! budget of tests it gives way to the exact scan of the matches. A post-filtered search
//! finds no match among its candidates and falls back to the same scan. Either way the
//! page must equal brute force over the records: same ids in the same order, scores within
//! 1e-5.

mod common;

use visual_store::embedded::{EmbeddedConfig, EmbeddedStore, HnswParams};
use visual_store::{ImageRecord, ObjectRecord, Page, SearchFilter, Store};

const NEAR: usize = 1500;
const FAR: usize = 300;

/// NEAR images around one centre, each with a person; FAR tagged "far" around the opposite
/// centre, each with a dog.
fn documents() -> (Vec<ImageRecord>, Vec<f32>) {
    let mut rng = common::Rng::new(5);
    let near = rng.unit_vector(common::DIMENSION);
    let far: Vec<f32> = near.iter().map(|x| -x).collect();
    let docs = (0..NEAR + FAR)
        .map(|i| {
            let is_far = i >= NEAR;
            let centre = if is_far { &far } else { &near };
            let class = if is_far { "dog" } else { "person" };
            ImageRecord {
                id: common::image_id(i),
                width: 640,
                height: 480,
                created_at: common::BASE_TIME,
                tags: if is_far { vec!["far".into()] } else { Vec::new() },
                metadata: serde_json::json!({}),
                embedding: rng.around(centre, 0.7),
                objects: vec![ObjectRecord {
                    class_id: u32::from(is_far),
                    class_name: class.into(),
                    confidence: 0.9,
                    bbox: [1.0, 1.0, 50.0, 50.0],
                    embedding: rng.around(centre, 0.7),
                }],
                faces: Vec::new(),
            }
        })
        .collect();
    (docs, near)
}

/// `in_graph_filter_fraction` 0 tests the filter inside the traversal, 2 post-filters.
async fn far_matches_are_found_exactly(in_graph_filter_fraction: f32) {
    let dir = tempfile::tempdir().unwrap();
    // Candidate list 10, for objects too, filtered or not, in one shard: the in-graph search
    // may test max(2 * 300, 10 * 64) = 640 vectors, fewer than the 1,500 near ones it meets
    // first, so it gives way.
    let config = EmbeddedConfig {
        exact_scan_limit: 8,
        exact_scan_factor: 0.0,
        object_expansion_factor: 1,
        filtered_expansion_factor: 1,
        object_graph_shards: 1,
        hnsw: HnswParams { expansion_search: 10, ..HnswParams::default() },
        in_graph_filter_fraction,
        ..EmbeddedConfig::new(dir.path())
    };
    let store = EmbeddedStore::open_async(config).await.unwrap();
    let (docs, near) = documents();
    for outcome in store.put_batch(docs.clone()).await.unwrap() {
        outcome.unwrap();
    }
    let page = Page { k: 10, offset: 5 };
    let by_tag = SearchFilter { tags: vec!["far".into()], ..SearchFilter::default() };
    let got = store.search_images(&near, &by_tag, page).await.unwrap();
    common::assert_same_ranking(
        "images tagged far",
        &got.into_iter().map(|h| (h.image_id, h.score)).collect::<Vec<_>>(),
        &common::exact_images(&docs, &near, &by_tag, page),
    );
    let dogs = SearchFilter { classes: vec!["dog".into()], ..SearchFilter::default() };
    let got = store.search_objects(&near, &dogs, page).await.unwrap();
    common::assert_same_ranking(
        "dog objects",
        &got.into_iter().map(|h| (format!("{}#{}", h.image_id, h.object_index), h.score)).collect::<Vec<_>>(),
        &common::exact_objects(&docs, &near, &dogs, page),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_matches_through_the_in_graph_filter() {
    far_matches_are_found_exactly(0.0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn far_matches_through_the_post_filter() {
    far_matches_are_found_exactly(2.0).await;
}
