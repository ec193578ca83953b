//! The OpenSearch store: one k-NN index (lucene HNSW, cosine) holding each image as a
//! document with its vector, and its objects and faces as nested documents with theirs.
//! Request bodies come from [`query`]; this module sends them and reads the answers.
//! Search hits come back with their documents minus vectors (`_source` filtering) and,
//! for image search, the matched object as a nested inner hit: one request per search.
//!
//! Durability: writes use `refresh=wait_for`, so an acknowledged put is both persisted
//! (OpenSearch fsyncs its translog before acknowledging, `index.translog.durability:
//! request`) and visible to the next search.
//!
//! Every request is bounded by `request_timeout`: a node that accepts connections but does
//! not answer (hung, paused, partitioned) gives `Unavailable` instead of a caller waiting
//! for ever; a refused connection (node stopped) gives `Unavailable` at once. With several
//! node URLs a request that gets no answer moves to the next node ([`nodes`]), and only
//! when no node answers is it `Unavailable`.
//!
//! The index is created or checked once, by [`OpenSearchStore::connect`] or else by the
//! first call that needs it: a store made with [`OpenSearchStore::new`] while OpenSearch is
//! down answers `Unavailable` until the node is back, and never writes into an index it has
//! not checked (a `_bulk` into a missing index would create one with a dynamic mapping).
//! The check also raises the index's inner-hits window (`index.max_inner_result_window`,
//! default 100) to the store's result window when it is lower, so object and face searches
//! work up to `max_k` on an index created by an older build.

mod nodes;
pub mod query;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opensearch::http::request::JsonBody;
use opensearch::http::response::Response;
use opensearch::indices::{
    IndicesCreateParts, IndicesDeleteParts, IndicesExistsParts, IndicesGetMappingParts, IndicesGetSettingsParts,
    IndicesPutSettingsParts,
};
use opensearch::params::Refresh;
use opensearch::{BulkParts, CountParts, DeleteParts, GetParts, SearchParts};
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::OnceCell;

use nodes::NodePool;

use crate::validate::{check_query, check_record};
use crate::{
    FaceHit, ImageHit, ImageRecord, MatchedObject, NodeHealth, ObjectHit, ObjectSummary, Page, PutOutcome, QueryLimits,
    Result, SearchFilter, Store, StoreError,
};

#[derive(Clone, Debug)]
pub struct OpenSearchConfig {
    /// The cluster's nodes, e.g. `http://127.0.0.1:9200`; requests are spread over those
    /// that answer.
    pub urls: Vec<String>,
    pub index: String,
    /// Vector length; fixed in the mapping.
    pub dimension: usize,
    pub limits: QueryLimits,
    /// Longest one request may take on one node, from connecting to the end of the answer.
    pub request_timeout: Duration,
    /// First pause before probing a node that stopped answering; doubled per failed probe
    /// up to 32 times it.
    pub probe_interval: Duration,
    /// How the store creates its index (an existing index keeps its own).
    pub index_settings: IndexSettings,
}

/// Default `request_timeout`: far above a 1,000-record `_bulk` with `refresh=wait_for`
/// (a few seconds on a 2-core machine), far below "hung".
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Default `probe_interval`.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The index settings users tune (docs/opensearch.md, "Index settings"). `shards`, `m` and
/// `ef_construction` are fixed when the store creates the index; `replicas` and
/// `refresh_interval` are dynamic index settings an operator may change later with
/// `PUT <index>/_settings`; `ef_search` is sent with every query.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct IndexSettings {
    /// Primary shards: the unit a cluster spreads over its nodes.
    pub shards: u32,
    /// Copies of each primary on other nodes: a cluster with N nodes survives losing
    /// `replicas` of them without losing data (a one-node cluster stays yellow with 1).
    pub replicas: u32,
    /// HNSW links per vector (Lucene's `m`).
    pub m: u32,
    /// Candidates kept while linking a new vector.
    pub ef_construction: u32,
    /// Fewest candidates each k-NN query collects: Lucene's HNSW search takes `k` as its
    /// candidate list, so this is the query's `k` whenever the page asks for fewer.
    pub ef_search: usize,
    /// How soon a write becomes searchable without `refresh=wait_for` (the store's own
    /// writes wait for it), e.g. "1s"; "-1" refreshes only when asked.
    pub refresh_interval: String,
}

impl Default for IndexSettings {
    /// Two primaries with one replica each, as the original design's schema; HNSW as
    /// before (m 16, ef_construction 128, ef_search 100).
    fn default() -> Self {
        IndexSettings {
            shards: 2,
            replicas: 1,
            m: 16,
            ef_construction: 128,
            ef_search: 100,
            refresh_interval: "1s".into(),
        }
    }
}

impl OpenSearchConfig {
    /// `urls`: one node or several, comma-separated.
    pub fn new(urls: &str, index: &str, dimension: usize) -> Self {
        OpenSearchConfig {
            urls: split_urls(urls),
            index: index.to_owned(),
            dimension,
            limits: QueryLimits::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            index_settings: IndexSettings::default(),
        }
    }
}

/// The URLs of a comma-separated list, blanks dropped.
pub fn split_urls(urls: &str) -> Vec<String> {
    urls.split(',').map(str::trim).filter(|url| !url.is_empty()).map(str::to_owned).collect()
}

#[derive(Clone)]
pub struct OpenSearchStore {
    nodes: Arc<NodePool>,
    config: OpenSearchConfig,
    /// Set once the index exists with this store's mapping; shared by the clones.
    index_checked: Arc<OnceCell<()>>,
}

/// A response whose body could not be read: the node went away mid-answer.
fn unreadable(context: &str) -> impl Fn(opensearch::Error) -> StoreError + '_ {
    move |e| StoreError::Unavailable(format!("opensearch {context}: the answer broke off: {e}"))
}

/// Statuses that mean "not now" rather than "wrong": 503 (e.g. a restarted node answers
/// `no_shard_available_action_exception` until its shards are recovered) and 429 (overloaded).
fn retryable(status: u16) -> bool {
    matches!(status, 429 | 503)
}

/// The body of a response, or an error naming the status and OpenSearch's reason:
/// `Unavailable` for 429 and 503, `Io` for any other failure.
async fn json_ok(response: Response, context: &str) -> Result<Value> {
    let status = response.status_code();
    let body: Value = response.json().await.map_err(unreadable(context))?;
    if status.is_success() {
        return Ok(body);
    }
    let message = format!("opensearch {context}: HTTP {status}: {}", body["error"]);
    Err(if retryable(status.as_u16()) { StoreError::Unavailable(message) } else { StoreError::Io(message) })
}

impl OpenSearchStore {
    /// Connects, creates the index with the versioned mapping if it is missing, and checks
    /// the mapping of an existing one (`SchemaMismatch` when it differs).
    pub async fn connect(config: OpenSearchConfig) -> Result<Self> {
        let store = OpenSearchStore::new(config)?;
        store.ensure_index().await?;
        Ok(store)
    }

    /// A store that has sent nothing yet; the index is created or checked by the first
    /// call (see the module notes). Fails only on a malformed or empty URL list.
    pub fn new(config: OpenSearchConfig) -> Result<Self> {
        let nodes = NodePool::new(&config.urls, config.request_timeout, config.probe_interval)?;
        Ok(OpenSearchStore { nodes, config, index_checked: Arc::new(OnceCell::new()) })
    }

    /// Creates the index if it is missing and checks its mapping, once per store: after
    /// the first success this returns at once.
    pub async fn ensure_index(&self) -> Result<()> {
        self.index_checked.get_or_try_init(|| self.create_or_check_index()).await.map(drop)
    }

    async fn create_or_check_index(&self) -> Result<()> {
        let index = self.config.index.as_str();
        let exists = self
            .nodes
            .send("index exists", |client| async move {
                client.indices().exists(IndicesExistsParts::Index(&[index])).send().await
            })
            .await?;
        if exists.status_code().as_u16() == 404 {
            let body =
                query::create_index(self.config.dimension, self.config.limits.max_window, &self.config.index_settings);
            let response = self
                .nodes
                .send("create index", |client| {
                    let body = body.clone();
                    async move { client.indices().create(IndicesCreateParts::Index(index)).body(body).send().await }
                })
                .await?;
            let status = response.status_code().as_u16();
            let body: Value = response.json().await.map_err(unreadable("create index"))?;
            // Another process may have created it first; its mapping is checked below.
            if status != 200 && body["error"]["type"] != "resource_already_exists_exception" {
                return Err(StoreError::Io(format!(
                    "opensearch create index {index}: HTTP {status}: {}",
                    body["error"]
                )));
            }
        }
        self.check_mapping().await?;
        self.ensure_inner_window().await
    }

    /// Raises the index's inner-hits window (a dynamic setting) to what part searches up to
    /// the store's result window need, when the index has less: created by a build that did
    /// not set it, or with smaller limits.
    async fn ensure_inner_window(&self) -> Result<()> {
        let index = self.config.index.as_str();
        let needed = query::inner_window(self.config.limits.max_window);
        let response = self
            .nodes
            .send("get settings", |client| async move {
                client
                    .indices()
                    .get_settings(IndicesGetSettingsParts::IndexName(&[index], &[query::INNER_WINDOW_SETTING]))
                    .flat_settings(true)
                    .include_defaults(true)
                    .send()
                    .await
            })
            .await?;
        let current = query::inner_window_of(&json_ok(response, "get settings").await?);
        if current.is_some_and(|current| current >= needed) {
            return Ok(());
        }
        let response = self
            .nodes
            .send("put settings", |client| async move {
                client
                    .indices()
                    .put_settings(IndicesPutSettingsParts::Index(&[index]))
                    .body(query::inner_window_update(needed))
                    .send()
                    .await
            })
            .await?;
        json_ok(response, "put settings").await?;
        tracing::info!(index, ?current, needed, "raised {} for part searches", query::INNER_WINDOW_SETTING);
        Ok(())
    }

    async fn check_mapping(&self) -> Result<()> {
        let index = self.config.index.as_str();
        let response = self
            .nodes
            .send("get mapping", |client| async move {
                client.indices().get_mapping(IndicesGetMappingParts::Index(&[index])).send().await
            })
            .await?;
        let body = json_ok(response, "get mapping").await?;
        let meta = body.as_object().and_then(|indices| indices.values().next()).map(|i| &i["mappings"]["_meta"]);
        query::check_mapping_meta(meta.filter(|m| !m.is_null()), self.config.dimension)
            .map_err(|message| StoreError::SchemaMismatch(format!("index {index}: {message}")))
    }

    /// Deletes the whole index (tests clean up with it).
    pub async fn delete_index(&self) -> Result<()> {
        let index = self.config.index.as_str();
        let response = self
            .nodes
            .send("delete index", |client| async move {
                client.indices().delete(IndicesDeleteParts::Index(&[index])).send().await
            })
            .await?;
        json_ok(response, "delete index").await.map(drop)
    }

    async fn search(&self, body: Value) -> Result<Vec<Value>> {
        self.ensure_index().await?;
        let index = self.config.index.as_str();
        let response = self
            .nodes
            .send("search", |client| {
                let body = body.clone();
                async move { client.search(SearchParts::Index(&[index])).body(body).send().await }
            })
            .await?;
        let body = json_ok(response, "search").await?;
        Ok(body["hits"]["hits"].as_array().cloned().unwrap_or_default())
    }

    fn ef_search(&self) -> usize {
        self.config.index_settings.ef_search
    }

    fn check(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<()> {
        check_query(query, filter, page, self.config.limits, Some(self.config.dimension))
    }

    /// Every part (inner hit) of the image hits, ranked best first, ties by image id and
    /// index as in the embedded store.
    async fn ranked_parts(&self, path: &str, body: Value, page: Page) -> Result<Vec<Part>> {
        let mut parts = Vec::new();
        for hit in self.search(body).await? {
            let image_id = hit["_id"].as_str().unwrap_or_default().to_owned();
            let (width, height) = (dimension(&hit["_source"]["width"]), dimension(&hit["_source"]["height"]));
            for inner in hit["inner_hits"][path]["hits"]["hits"].as_array().into_iter().flatten() {
                parts.push(Part {
                    image_id: image_id.clone(),
                    index: inner["_nested"]["offset"].as_u64().unwrap_or_default() as usize,
                    source: inner["_source"].clone(),
                    score: query::cosine_from_score(inner["_score"].as_f64().unwrap_or_default()),
                    width,
                    height,
                });
            }
        }
        parts.sort_by(|a, b| {
            b.score.total_cmp(&a.score).then_with(|| (&a.image_id, a.index).cmp(&(&b.image_id, b.index)))
        });
        Ok(parts.into_iter().skip(page.offset).take(page.k).collect())
    }
}

/// One object or face of an object or face search: its inner hit and its image's size.
struct Part {
    image_id: String,
    index: usize,
    source: Value,
    score: f32,
    width: u32,
    height: u32,
}

fn dimension(value: &Value) -> u32 {
    value.as_u64().unwrap_or_default() as u32
}

/// An image hit from its search hit: `_source` is the document without vectors
/// (`query::IMAGE_SOURCE`), the `matched_object` inner hit names the best allowed object.
fn image_hit(hit: &Value) -> Result<ImageHit> {
    #[derive(serde::Deserialize)]
    struct Source {
        width: u32,
        height: u32,
        created_at: i64,
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        metadata: Value,
        #[serde(default)]
        objects: Vec<ObjectSummary>,
    }
    let image_id = hit["_id"].as_str().unwrap_or_default().to_owned();
    let source: Source = serde_json::from_value(hit["_source"].clone())
        .map_err(|e| StoreError::Io(format!("opensearch search: image {image_id} has an unreadable _source: {e}")))?;
    let matched = &hit["inner_hits"][query::MATCHED_OBJECT]["hits"]["hits"][0];
    let matched_object = matched["_nested"]["offset"].as_u64().map(|offset| MatchedObject {
        object_index: offset as usize,
        score: query::cosine_from_script_score(matched["_score"].as_f64().unwrap_or_default()),
    });
    Ok(ImageHit {
        image_id,
        score: query::cosine_from_score(hit["_score"].as_f64().unwrap_or_default()),
        width: source.width,
        height: source.height,
        created_at: source.created_at,
        tags: source.tags,
        metadata: source.metadata,
        objects: source.objects,
        matched_object,
    })
}

fn bbox(source: &Value) -> [f32; 4] {
    let mut bbox = [0.0; 4];
    for (slot, value) in bbox.iter_mut().zip(source["bbox"].as_array().into_iter().flatten()) {
        *slot = value.as_f64().unwrap_or_default() as f32;
    }
    bbox
}

#[async_trait]
impl Store for OpenSearchStore {
    fn kind(&self) -> &'static str {
        "opensearch"
    }

    fn nodes(&self) -> Vec<NodeHealth> {
        self.nodes.health()
    }

    /// The index is checked on every call, so one deleted or replaced after the start is noticed.
    async fn ready(&self) -> Result<()> {
        self.ensure_index().await?;
        self.check_mapping().await
    }

    async fn put(&self, record: ImageRecord) -> Result<PutOutcome> {
        let mut outcomes = self.put_batch(vec![record]).await?;
        outcomes.pop().expect("one outcome per record")
    }

    /// One `_bulk` request; each item's own status decides its outcome: 201 created, 409
    /// already stored, 400 `InvalidRecord` (the document itself is refused, e.g. a tag too
    /// long for a keyword), 429 or 503 `Unavailable` (OpenSearch is overloaded, or its shard
    /// is not available yet: try again), any other `Io`; every error names the image and
    /// carries OpenSearch's reason.
    async fn put_batch(&self, records: Vec<ImageRecord>) -> Result<Vec<Result<PutOutcome>>> {
        self.ensure_index().await?;
        let mut outcomes: Vec<Option<Result<PutOutcome>>> = Vec::with_capacity(records.len());
        let mut valid = Vec::new();
        for record in records {
            match check_record(&record, Some(self.config.dimension)) {
                Ok(_) => {
                    outcomes.push(None);
                    valid.push(record);
                }
                Err(e) => outcomes.push(Some(Err(e))),
            }
        }
        if !valid.is_empty() {
            let lines = query::bulk_create(&self.config.index, &valid);
            let response = self
                .nodes
                .send("bulk", |client| {
                    let body: Vec<JsonBody<Value>> = lines.iter().cloned().map(JsonBody::new).collect();
                    async move { client.bulk(BulkParts::None).body(body).refresh(Refresh::WaitFor).send().await }
                })
                .await?;
            let body = json_ok(response, "bulk").await?;
            let items = body["items"].as_array().cloned().unwrap_or_default();
            if items.len() != valid.len() {
                return Err(StoreError::Io(format!(
                    "opensearch bulk: {} items answered for {} records",
                    items.len(),
                    valid.len()
                )));
            }
            let mut answers = items.iter().zip(&valid).map(|(item, record)| {
                let item = &item["create"];
                let failure = |status: &str| {
                    format!("opensearch bulk: image {:?} failed (status {status}): {}", record.id, item["error"])
                };
                match item["status"].as_u64() {
                    Some(200 | 201) => Ok(PutOutcome::Created),
                    Some(409) => Ok(PutOutcome::AlreadyStored),
                    Some(400) => Err(StoreError::InvalidRecord(failure("400"))),
                    Some(status) if u16::try_from(status).is_ok_and(retryable) => {
                        Err(StoreError::Unavailable(failure(&status.to_string())))
                    }
                    Some(status) => Err(StoreError::Io(failure(&status.to_string()))),
                    None => Err(StoreError::Io(failure("missing"))),
                }
            });
            for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
                *outcome = answers.next();
            }
        }
        Ok(outcomes.into_iter().map(|o| o.expect("every record answered")).collect())
    }

    async fn get(&self, image_id: &str) -> Result<Option<ImageRecord>> {
        self.ensure_index().await?;
        let index = self.config.index.as_str();
        let response = self
            .nodes
            .send("get", |client| async move { client.get(GetParts::IndexId(index, image_id)).send().await })
            .await?;
        if response.status_code().as_u16() == 404 {
            return Ok(None);
        }
        let body = json_ok(response, "get").await?;
        serde_json::from_value(body["_source"].clone())
            .map(Some)
            .map_err(|e| StoreError::Io(format!("opensearch get {image_id:?}: stored document does not parse: {e}")))
    }

    async fn delete(&self, image_id: &str) -> Result<bool> {
        self.ensure_index().await?;
        let index = self.config.index.as_str();
        let response = self
            .nodes
            .send("delete", |client| async move {
                client.delete(DeleteParts::IndexId(index, image_id)).refresh(Refresh::WaitFor).send().await
            })
            .await?;
        if response.status_code().as_u16() == 404 {
            return Ok(false);
        }
        json_ok(response, "delete").await.map(|_| true)
    }

    async fn count(&self) -> Result<usize> {
        self.ensure_index().await?;
        let index = self.config.index.as_str();
        let response = self
            .nodes
            .send("count", |client| async move { client.count(CountParts::Index(&[index])).send().await })
            .await?;
        let body = json_ok(response, "count").await?;
        Ok(body["count"].as_u64().unwrap_or_default() as usize)
    }

    async fn search_images(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<ImageHit>> {
        self.check(query, filter, page)?;
        let hits = self.search(query::search_images(query, filter, page.k, page.offset, self.ef_search())).await?;
        hits.iter().map(image_hit).collect()
    }

    async fn search_objects(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<ObjectHit>> {
        self.check(query, filter, page)?;
        let body = query::search_objects(query, filter, page.k + page.offset, self.ef_search());
        let parts = self.ranked_parts("objects", body, page).await?;
        Ok(parts
            .into_iter()
            .map(|part| ObjectHit {
                class_name: part.source["class_name"].as_str().unwrap_or_default().to_owned(),
                confidence: part.source["confidence"].as_f64().unwrap_or_default() as f32,
                bbox: bbox(&part.source),
                image_id: part.image_id,
                object_index: part.index,
                score: part.score,
                width: part.width,
                height: part.height,
            })
            .collect())
    }

    async fn search_faces(&self, query: &[f32], filter: &SearchFilter, page: Page) -> Result<Vec<FaceHit>> {
        self.check(query, filter, page)?;
        let body = query::search_faces(query, filter, page.k + page.offset, self.ef_search());
        let parts = self.ranked_parts("faces", body, page).await?;
        Ok(parts
            .into_iter()
            .map(|part| FaceHit {
                bbox: bbox(&part.source),
                image_id: part.image_id,
                face_index: part.index,
                score: part.score,
                width: part.width,
                height: part.height,
            })
            .collect())
    }
}
