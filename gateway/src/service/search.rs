//! Search, shared by every search endpoint: validation of k, offset, scores, class names
//! and dates into a `visual_store::SearchFilter` + `Page`; the query embeddings (text
//! through an LRU cache, photos through the stored record or the ingest model); and the
//! store calls whose hits become results: one store call per search, the hits carrying
//! what a result shows (the matched object is chosen inside the store,
//! `visual_store::matching`).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;
use visual_store::{ImageHit, Page, SearchFilter, Store};

use crate::api::{
    file_url, object_view, HybridQuery, ImageResult, MatchedObject, ObjectQuery, ObjectResult, ObjectView,
};
use crate::config::SearchConfig;
use crate::inference::Inference;
use crate::metrics::Metrics;
use crate::service::dates::unix_seconds;
use crate::service::tags::{self, TagLimits};
use crate::service::ServiceError;

/// Longest text query accepted, in characters (CLIP keeps 77 tokens anyway).
const MAX_QUERY_CHARS: usize = 1000;

/// k and offset checked against the configured limits.
fn page(k: Option<usize>, offset: Option<usize>, limits: &SearchConfig) -> Result<Page, ServiceError> {
    let k = k.unwrap_or(limits.default_k);
    if k == 0 || k > limits.max_k {
        return Err(ServiceError::BadRequest(format!("k must be between 1 and {}, got {k}", limits.max_k)));
    }
    let offset = offset.unwrap_or(0);
    if offset.saturating_add(k) > limits.max_window {
        return Err(ServiceError::BadRequest(format!(
            "offset + k must be at most {}, got {offset} + {k}",
            limits.max_window
        )));
    }
    Ok(Page { k, offset })
}

/// Cosine threshold: results scoring below it are dropped. Absent means no threshold.
fn min_score(value: Option<f32>) -> Result<f32, ServiceError> {
    match value {
        None => Ok(-1.0),
        Some(v) if v.is_finite() && (-1.0..=1.0).contains(&v) => Ok(v),
        Some(v) => Err(ServiceError::BadRequest(format!("min_score must be a cosine in [-1, 1], got {v}"))),
    }
}

/// The page and the cosine threshold of a search request, both checked.
pub fn paging(
    k: Option<usize>,
    offset: Option<usize>,
    min_score_value: Option<f32>,
    limits: &SearchConfig,
) -> Result<(Page, f32), ServiceError> {
    Ok((page(k, offset, limits)?, min_score(min_score_value)?))
}

pub fn query_text(text: Option<&str>) -> Result<String, ServiceError> {
    let text = text.unwrap_or("").trim();
    if text.is_empty() {
        return Err(ServiceError::BadRequest("the text query is empty".into()));
    }
    if text.chars().count() > MAX_QUERY_CHARS {
        return Err(ServiceError::BadRequest(format!("the text query is longer than {MAX_QUERY_CHARS} characters")));
    }
    Ok(text.to_owned())
}

fn min_confidence(value: Option<f32>) -> Result<f32, ServiceError> {
    match value {
        None => Ok(0.0),
        Some(v) if v.is_finite() && (0.0..=1.0).contains(&v) => Ok(v),
        Some(v) => Err(ServiceError::BadRequest(format!("min_confidence must be in [0, 1], got {v}"))),
    }
}

/// The canonical class names (case-insensitive match); unknown names are one 400
/// listing every one of them.
pub fn classes(requested: &[String], known: &[String]) -> Result<Vec<String>, ServiceError> {
    let mut resolved = Vec::new();
    let mut unknown = Vec::new();
    for name in requested {
        let wanted = name.trim();
        match known.iter().find(|k| k.eq_ignore_ascii_case(wanted)) {
            Some(k) if !resolved.contains(k) => resolved.push(k.clone()),
            Some(_) => {}
            None => unknown.push(format!("{name:?}")),
        }
    }
    if !unknown.is_empty() {
        return Err(ServiceError::BadRequest(format!(
            "unknown class name(s): {}; known classes are the detector's: {}",
            unknown.join(", "),
            known.join(", ")
        )));
    }
    Ok(resolved)
}

/// The filter of a hybrid query; `max_tags` is `limits.max_query_tags`.
pub fn hybrid_filter(
    query: &HybridQuery,
    known_classes: &[String],
    max_tags: usize,
) -> Result<SearchFilter, ServiceError> {
    let created_from = query.date_from.as_ref().map(|b| unix_seconds("date_from", b, false)).transpose()?;
    let created_to = query.date_to.as_ref().map(|b| unix_seconds("date_to", b, true)).transpose()?;
    if let (Some(from), Some(to)) = (created_from, created_to) {
        if from > to {
            return Err(ServiceError::BadRequest("date_from is after date_to".into()));
        }
    }
    Ok(SearchFilter {
        classes: classes(&query.classes, known_classes)?,
        min_confidence: min_confidence(query.min_confidence)?,
        created_from,
        created_to,
        tags: tags::distinct(
            query.tags.iter().map(String::as_str),
            &TagLimits { max_tags, key: "limits.max_query_tags", max_chars: None },
        )?,
    })
}

/// The filter of an object query: classes restrict the objects themselves.
pub fn object_filter(query: &ObjectQuery, known_classes: &[String]) -> Result<SearchFilter, ServiceError> {
    Ok(SearchFilter {
        classes: classes(&query.classes, known_classes)?,
        min_confidence: min_confidence(query.min_confidence)?,
        ..SearchFilter::default()
    })
}

/// Text-query embeddings by query text, so a repeated query skips tokenizer and Triton.
pub struct TextEmbeddingCache {
    entries: Mutex<LruCache<String, Arc<Vec<f32>>>>,
}

impl TextEmbeddingCache {
    pub fn new(capacity: usize) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        TextEmbeddingCache { entries: Mutex::new(LruCache::new(capacity)) }
    }

    fn get(&self, text: &str) -> Option<Arc<Vec<f32>>> {
        self.entries.lock().expect("cache lock").get(text).cloned()
    }

    fn insert(&self, text: String, embedding: Arc<Vec<f32>>) {
        self.entries.lock().expect("cache lock").put(text, embedding);
    }
}

/// The embedding of a (validated) text query, from the cache or Triton.
pub async fn embed_text(
    inference: &dyn Inference,
    cache: &TextEmbeddingCache,
    metrics: &Metrics,
    text: &str,
) -> Result<Arc<Vec<f32>>, ServiceError> {
    if let Some(hit) = cache.get(text) {
        metrics.count_text_cache(true);
        return Ok(hit);
    }
    metrics.count_text_cache(false);
    let embedding = Arc::new(inference.embed_text(text).await?);
    cache.insert(text.to_owned(), embedding.clone());
    Ok(embedding)
}

/// The embedding of a query photo: the stored one when the same bytes were ingested
/// (no Triton call), else the ensemble's whole-image embedding.
pub async fn embed_image(
    store: &dyn Store,
    inference: &dyn Inference,
    image: bytes::Bytes,
) -> Result<Vec<f32>, ServiceError> {
    if let Some(record) = store.get(&crate::blobs::content_id(&image)).await? {
        return Ok(record.embedding);
    }
    Ok(inference.analyze_image(image).await?.embedding)
}

/// Whole-image k-NN with the filter: one store call, whose hits carry what a result shows.
pub async fn images(
    store: &dyn Store,
    query: &[f32],
    filter: &SearchFilter,
    page: Page,
    min_score: f32,
    include_metadata: bool,
) -> Result<Vec<ImageResult>, ServiceError> {
    let hits = store.search_images(query, filter, page).await?;
    Ok(hits.into_iter().filter(|h| h.score >= min_score).map(|hit| image_result(hit, include_metadata)).collect())
}

fn image_result(hit: ImageHit, include_metadata: bool) -> ImageResult {
    let objects: Vec<ObjectView> = hit.objects.iter().enumerate().map(|(i, o)| object_view(i, o)).collect();
    let matched_object = hit.matched_object.and_then(|matched| {
        let object = objects.get(matched.object_index)?.clone();
        Some(MatchedObject { object, score: matched.score })
    });
    ImageResult {
        file_url: file_url(&hit.image_id),
        image_id: hit.image_id,
        score: hit.score,
        width: hit.width,
        height: hit.height,
        created_at: hit.created_at,
        tags: hit.tags,
        metadata: include_metadata.then_some(hit.metadata),
        matched_object,
        objects,
    }
}

/// Object-level k-NN: each result names its image and box; one store call.
pub async fn objects(
    store: &dyn Store,
    query: &[f32],
    filter: &SearchFilter,
    page: Page,
    min_score: f32,
) -> Result<Vec<ObjectResult>, ServiceError> {
    let hits = store.search_objects(query, filter, page).await?;
    Ok(hits
        .into_iter()
        .filter(|h| h.score >= min_score)
        .map(|hit| ObjectResult {
            file_url: file_url(&hit.image_id),
            image_id: hit.image_id,
            object_index: hit.object_index,
            class_name: hit.class_name,
            confidence: hit.confidence,
            bbox: hit.bbox,
            score: hit.score,
            width: hit.width,
            height: hit.height,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;

    fn limits() -> SearchConfig {
        GatewayConfig::default().search
    }
    fn known() -> Vec<String> {
        GatewayConfig::default().models.class_names
    }

    #[test]
    fn k_bounds_are_enforced() {
        assert_eq!(page(None, None, &limits()).unwrap(), Page { k: 10, offset: 0 });
        assert_eq!(page(Some(1000), Some(5), &limits()).unwrap(), Page { k: 1000, offset: 5 });
        for k in [0, 1001, 100_000] {
            let err = page(Some(k), None, &limits()).unwrap_err();
            assert!(err.to_string().contains("k must be between 1 and 1000"), "{err}");
        }
        assert!(page(Some(10), Some(9_995), &limits()).is_err());
    }

    #[test]
    fn empty_and_blank_queries_are_rejected() {
        assert!(query_text(None).is_err());
        assert!(query_text(Some("  ")).is_err());
        assert_eq!(query_text(Some(" red car ")).unwrap(), "red car");
        assert!(query_text(Some(&"a".repeat(1001))).is_err());
    }

    #[test]
    fn unknown_classes_are_all_named() {
        assert_eq!(classes(&["Person".into(), "dog".into()], &known()).unwrap(), vec!["person", "dog"]);
        let err = classes(&["person".into(), "unicorn".into(), "dragon".into()], &known()).unwrap_err().to_string();
        assert!(err.contains("\"unicorn\"") && err.contains("\"dragon\""), "{err}");
        assert!(!err.starts_with("unknown class name(s): \"person\""), "{err}");
    }

    #[test]
    fn hybrid_filter_is_built_from_every_field() {
        let query: HybridQuery = serde_json::from_value(serde_json::json!({
            "text": "a dog", "classes": ["dog"], "min_confidence": 0.5,
            "date_from": "2024-01-01", "date_to": 1_800_000_000, "tags": ["park", " ", "beach", "park"]
        }))
        .unwrap();
        let filter = hybrid_filter(&query, &known(), 2).unwrap();
        assert_eq!(filter.classes, vec!["dog"]);
        assert_eq!(filter.min_confidence, 0.5);
        assert_eq!(filter.created_from, Some(1_704_067_200));
        assert_eq!(filter.created_to, Some(1_800_000_000));
        assert_eq!(filter.tags, vec!["park", "beach"]);
        let err = hybrid_filter(&query, &known(), 1).unwrap_err().to_string();
        assert!(err.contains("limits.max_query_tags"), "{err}");
    }

    #[test]
    fn hybrid_filter_rejects_bad_values() {
        let bad = [
            serde_json::json!({"text": "x", "min_confidence": 1.5}),
            serde_json::json!({"text": "x", "date_from": "2024-02-01", "date_to": "2024-01-01"}),
            serde_json::json!({"text": "x", "classes": ["spaceship"]}),
        ];
        for body in bad {
            let query: HybridQuery = serde_json::from_value(body.clone()).unwrap();
            assert!(hybrid_filter(&query, &known(), 16).is_err(), "{body}");
        }
        assert!(serde_json::from_value::<HybridQuery>(serde_json::json!({"txt": "x"})).is_err());
    }

    #[test]
    fn min_score_must_be_a_cosine() {
        assert_eq!(min_score(None).unwrap(), -1.0);
        assert_eq!(min_score(Some(0.2)).unwrap(), 0.2);
        assert!(min_score(Some(1.5)).is_err());
        assert!(min_score(Some(f32::NAN)).is_err());
    }

    #[test]
    fn cache_returns_what_was_inserted() {
        let cache = TextEmbeddingCache::new(1);
        cache.insert("a".into(), Arc::new(vec![1.0]));
        cache.insert("b".into(), Arc::new(vec![2.0]));
        assert!(cache.get("a").is_none());
        assert_eq!(cache.get("b").unwrap().as_slice(), &[2.0]);
    }
}
