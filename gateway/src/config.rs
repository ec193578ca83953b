//! Gateway configuration: a TOML file (every key optional, defaults below), then
//! environment variables and command-line flags on top (see `cli::ServeArgs`).
//!
//! Model names, tensor names, limits and timeouts live here so that no handler or
//! pipeline step carries a hard-coded constant.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GatewayConfig {
    pub server: ServerConfig,
    pub triton: TritonConfig,
    pub models: ModelsConfig,
    pub search: SearchConfig,
    pub store: StoreConfig,
    pub faces: FacesConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// A second address serving only `/health` (in full) and `/metrics`, without keys, for
    /// probes and scrapers; unset: none.
    pub ops_listen: Option<SocketAddr>,
    /// Largest request body (one upload, or a whole batch); larger gets 413.
    pub max_request_bytes: usize,
    /// Images of one batch request analysed at the same time.
    pub batch_concurrency: usize,
    /// How long a graceful shutdown waits for requests in flight.
    pub shutdown_timeout_s: u64,
    /// A connection must deliver a request's headers within this time, also between two
    /// requests on a kept-alive connection (so idle connections close after it too).
    pub header_read_timeout_ms: u64,
    /// A request body must arrive within this time (slow uploads get 408).
    pub body_read_timeout_ms: u64,
    /// The whole request, from headers read to response ready; past it 503.
    pub request_timeout_ms: u64,
    /// Requests served at once per endpoint class; the next gets 503 with Retry-After at once.
    pub max_concurrent_ingest: usize,
    pub max_concurrent_search: usize,
    pub max_concurrent_faces: usize,
    /// Retry-After (seconds) sent with an overload 503.
    pub retry_after_s: u64,
}

/// Input limits, each named in the 4xx that enforces it.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Photos in one `/ingest/batch` request.
    pub max_batch_images: usize,
    /// Bytes of one uploaded photo (ingest and query photos).
    pub max_image_bytes: usize,
    /// Tags of one photo after splitting and removing duplicates, and characters per tag.
    pub max_tags: usize,
    pub max_tag_chars: usize,
    /// Tags in one search filter.
    pub max_query_tags: usize,
    /// A photo's metadata: bytes of its JSON text and nesting depth.
    pub max_metadata_bytes: usize,
    pub max_metadata_depth: usize,
    /// Bytes of a request's query string (414 beyond).
    pub max_query_string_bytes: usize,
    /// Nesting depth of a JSON request body.
    pub max_json_depth: usize,
    /// Pixels (width x height) the gateway decodes at once on the face-crop path; a decode
    /// waits up to `decode_wait_ms` for room, then gets 503.
    pub decode_pixel_budget: u64,
    pub decode_wait_ms: u64,
}

/// API keys (docs/gateway.md, "Running it for other people"). Keys are stored as SHA-256
/// hashes (`sha256:<hex>`, printed by `gateway hash-key`); `GATEWAY_READ_KEYS` and
/// `GATEWAY_WRITE_KEYS` add plain keys (comma-separated), hashed at start. With no keys at
/// all, every request is allowed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Keys for search, reading images and the metrics.
    pub read_key_hashes: Vec<String>,
    /// Keys for everything (ingest, delete, face analysis, and all a read key may do).
    pub write_key_hashes: Vec<String>,
    /// Host header values (without port) accepted; empty: the listen address, localhost,
    /// 127.0.0.1 and ::1. `*` accepts any host.
    pub allowed_hosts: Vec<String>,
    /// Origins (scheme://host[:port]) allowed to send state-changing requests besides the
    /// gateway's own origin.
    pub allowed_origins: Vec<String>,
    /// Serve a non-loopback address without write keys (refused otherwise).
    pub allow_unauthenticated: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TritonConfig {
    /// gRPC endpoints of Triton servers that serve the same models, e.g.
    /// `["http://127.0.0.1:8001"]`; each call goes to a ready one with the fewest calls
    /// in flight (`triton_client::TritonPool`).
    pub endpoints: Vec<String>,
    /// Pause between two readiness probes of every endpoint, which put an endpoint taken
    /// out back once its server says it is ready.
    pub probe_interval_ms: u64,
    /// Deadline of one probe.
    pub probe_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// Deadline of one call with all its retries and pauses.
    pub call_timeout_ms: u64,
    /// Retries (with exponential backoff) while Triton is unavailable.
    pub max_retries: u32,
    pub initial_backoff_ms: u64,
}

/// The Triton models the gateway calls and their tensor names.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelsConfig {
    /// The decoding model inside both ensembles: the gateway reads the parameters it must
    /// agree with (`original_max_side`, `max_pixels`) from its config in Triton.
    pub preprocess_model: String,
    pub ingest_model: String,
    pub ingest_input: String,
    pub num_dets_output: String,
    pub boxes_output: String,
    pub scores_output: String,
    pub classes_output: String,
    pub embedding_output: String,
    pub box_embeddings_output: String,
    pub box_valid_output: String,
    /// (height, width) of the photo after EXIF orientation; empty when the ensemble
    /// does not expose it (width and height are then stored as 0).
    pub image_size_output: String,
    /// Region search (POST /search/region): the ensemble that crops and encodes a client's
    /// box as `ingest_model` does a detection (input `ingest_input` for the photo, outputs
    /// named as the ingest model's: boxes, box embeddings, box_valid, image size).
    pub region_model: String,
    /// Its box input, in the detector's letterbox pixels, and the input counting the boxes.
    pub region_boxes_input: String,
    pub region_count_input: String,
    pub text_model: String,
    pub text_input: String,
    pub text_output: String,
    /// D of every embedding.
    pub embedding_dim: usize,
    /// Folder with `clip-vocab.json` and `clip-merges.txt`.
    pub tokenizer_dir: PathBuf,
    /// Detections below this detector confidence are not stored.
    pub min_detection_confidence: f32,
    /// Class names in class-id order (COCO-80 unless the detector says otherwise).
    pub class_names: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    pub default_k: usize,
    pub max_k: usize,
    /// Largest `offset + k` a paginated query may reach.
    pub max_window: usize,
    /// Text-query embeddings kept in the LRU cache.
    pub text_cache_size: usize,
}

/// Faces: the `face_embed` ensemble and its tensors, request limits, face indexing on
/// ingest and the rerank scorer (docs/faces.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FacesConfig {
    /// Ingest also stores each photo's faces (one more Triton call per photo) and
    /// /health then requires the face model.
    pub index_on_ingest: bool,
    pub model: String,
    /// The models `model` is made of, shown in /health.
    pub component_models: Vec<String>,
    /// The model that aligns faces: `aligned_faces` reads its config parameters
    /// (`face_size`, `face_template`, ...) to re-create the crops it fed the encoder.
    pub align_model: String,
    pub input: String,
    pub image_size_output: String,
    pub num_faces_output: String,
    pub boxes_output: String,
    pub scores_output: String,
    pub landmarks_output: String,
    pub embeddings_output: String,
    pub valid_output: String,
    /// D of the face embeddings (128 for the MobileFaceNet stand-in).
    pub embedding_dim: usize,
    /// Faces below this detector score are not returned or stored.
    pub min_score: f32,
    /// POST /faces/embeddings: most images per request, and bytes per image.
    pub max_images_per_request: usize,
    pub max_image_bytes: usize,
    /// POST /faces/rerank: most candidates, longest embedding.
    pub max_rerank_candidates: usize,
    pub max_rerank_dim: usize,
    /// Default rerank threshold on the (1 + cos) / 2 score.
    pub rerank_threshold: f32,
    /// A shared library with the rerank C ABI (docs/faces.md) that replaces the native
    /// scorer; loaded once at start, and the gateway refuses to start if it cannot be.
    pub rerank_library: Option<PathBuf>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Embedded,
    Opensearch,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    pub kind: StoreKind,
    /// Embedded store files and the uploaded photos (content-addressed) live here.
    pub data_dir: PathBuf,
    /// OpenSearch store: the cluster's nodes; requests are spread over those that answer
    /// and move to another when one does not (docs/opensearch.md).
    pub opensearch_urls: Vec<String>,
    pub opensearch_index: String,
    /// OpenSearch store: shards, replicas, HNSW and refresh settings of the index it creates.
    pub opensearch_index_settings: visual_store::opensearch::IndexSettings,
    /// Embedded store: how its graphs hold vectors ("i8", "f16", "f32"; records keep f32
    /// and scores are rescored to true cosine either way).
    pub vector_encoding: VectorEncodingName,
    /// Embedded store: save the graphs in the background after this many vector changes
    /// (0: never by count) ...
    pub checkpoint_after_changes: u64,
    /// ... or when changes are this old (0: never by time).
    pub checkpoint_interval_s: u64,
    /// Embedded store: shards of the object graph, each filled by one thread (about one
    /// per two cores that insert; a store saved with another number is rebuilt once).
    pub object_graph_shards: usize,
}

/// Most shards `store.object_graph_shards` may name.
const MAX_OBJECT_GRAPH_SHARDS: usize = 16;

/// `store.vector_encoding` as written in the config file.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum VectorEncodingName {
    I8,
    F16,
    F32,
}

impl From<VectorEncodingName> for visual_store::embedded::VectorEncoding {
    fn from(name: VectorEncodingName) -> Self {
        match name {
            VectorEncodingName::I8 => Self::I8,
            VectorEncodingName::F16 => Self::F16,
            VectorEncodingName::F32 => Self::F32,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ops_listen: None,
            max_request_bytes: 32 * 1024 * 1024,
            batch_concurrency: 4,
            shutdown_timeout_s: 10,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 120_000,
            request_timeout_ms: 300_000,
            max_concurrent_ingest: 8,
            max_concurrent_search: 64,
            max_concurrent_faces: 8,
            retry_after_s: 1,
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_batch_images: 64,
            max_image_bytes: 20 * 1024 * 1024,
            max_tags: 64,
            max_tag_chars: 100,
            max_query_tags: 16,
            max_metadata_bytes: 16 * 1024,
            max_metadata_depth: 8,
            max_query_string_bytes: 8 * 1024,
            max_json_depth: 32,
            // Four 24-megapixel photos: about 300 MB of RGB8 plus their capped copies.
            decode_pixel_budget: 100_000_000,
            decode_wait_ms: 10_000,
        }
    }
}

impl Default for TritonConfig {
    fn default() -> Self {
        TritonConfig {
            endpoints: vec!["http://127.0.0.1:8001".into()],
            probe_interval_ms: 2_000,
            probe_timeout_ms: 1_000,
            request_timeout_ms: 30_000,
            call_timeout_ms: 60_000,
            connect_timeout_ms: 5_000,
            max_retries: 3,
            initial_backoff_ms: 100,
        }
    }
}

impl Default for ModelsConfig {
    fn default() -> Self {
        ModelsConfig {
            preprocess_model: "preprocess".into(),
            ingest_model: "visual_ingest".into(),
            ingest_input: "image".into(),
            num_dets_output: "num_dets".into(),
            boxes_output: "boxes".into(),
            scores_output: "scores".into(),
            classes_output: "classes".into(),
            embedding_output: "embedding".into(),
            box_embeddings_output: "box_embeddings".into(),
            box_valid_output: "box_valid".into(),
            image_size_output: "image_size".into(),
            region_model: "region_embed".into(),
            region_boxes_input: "det_boxes".into(),
            region_count_input: "num_dets".into(),
            text_model: "clip_text".into(),
            text_input: "tokens".into(),
            text_output: "embeddings".into(),
            embedding_dim: 512,
            tokenizer_dir: PathBuf::from("../shared/models/clip_tokenizer"),
            min_detection_confidence: 0.0,
            class_names: crate::coco::CLASS_NAMES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig { default_k: 10, max_k: 1000, max_window: 10_000, text_cache_size: 1024 }
    }
}

impl Default for FacesConfig {
    fn default() -> Self {
        FacesConfig {
            index_on_ingest: false,
            model: "face_embed".into(),
            component_models: vec!["face_detect".into(), "face_align".into(), "face_encoder".into()],
            align_model: "face_align".into(),
            input: "image".into(),
            image_size_output: "image_size".into(),
            num_faces_output: "num_faces".into(),
            boxes_output: "face_boxes".into(),
            scores_output: "face_scores".into(),
            landmarks_output: "face_landmarks".into(),
            embeddings_output: "face_embeddings".into(),
            valid_output: "face_valid".into(),
            embedding_dim: 128,
            min_score: 0.0,
            max_images_per_request: 16,
            max_image_bytes: 10 * 1024 * 1024,
            max_rerank_candidates: 10_000,
            max_rerank_dim: 4096,
            // cos 0.4: above the 99th percentile (0.401) of faces from different photos
            // measured with the stand-in encoder (docs/faces.md).
            rerank_threshold: 0.7,
            rerank_library: None,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            kind: StoreKind::Embedded,
            data_dir: PathBuf::from(".cache/gateway/data"),
            opensearch_urls: vec!["http://127.0.0.1:9200".into()],
            opensearch_index: "visual-search".into(),
            opensearch_index_settings: Default::default(),
            vector_encoding: VectorEncodingName::I8,
            checkpoint_after_changes: 100_000,
            checkpoint_interval_s: 60,
            object_graph_shards: 2,
        }
    }
}

impl GatewayConfig {
    /// Defaults, overridden by the file when one is given.
    pub fn load(path: Option<&Path>) -> anyhow::Result<GatewayConfig> {
        let config = match path {
            None => GatewayConfig::default(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
                Self::parse(&text).with_context(|| format!("parsing config {}", path.display()))?
            }
        };
        Ok(config)
    }

    pub fn parse(text: &str) -> anyhow::Result<GatewayConfig> {
        Ok(toml::from_str(text)?)
    }

    /// Rejects values no run could work with, naming the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        let s = &self.search;
        anyhow::ensure!(s.max_k >= 1, "search.max_k must be at least 1");
        anyhow::ensure!(
            (1..=s.max_k).contains(&s.default_k),
            "search.default_k must be between 1 and search.max_k ({})",
            s.max_k
        );
        anyhow::ensure!(s.max_window >= s.max_k, "search.max_window must be >= search.max_k");
        anyhow::ensure!(s.text_cache_size >= 1, "search.text_cache_size must be at least 1");
        anyhow::ensure!(self.models.embedding_dim >= 1, "models.embedding_dim must be at least 1");
        anyhow::ensure!(!self.models.class_names.is_empty(), "models.class_names must not be empty");
        anyhow::ensure!(self.server.batch_concurrency >= 1, "server.batch_concurrency must be at least 1");
        anyhow::ensure!(self.server.max_request_bytes >= 1024, "server.max_request_bytes is too small");
        let f = &self.faces;
        anyhow::ensure!(f.embedding_dim >= 1, "faces.embedding_dim must be at least 1");
        // The store holds one vector length; face vectors are zero-padded up to it.
        anyhow::ensure!(
            !f.index_on_ingest || f.embedding_dim <= self.models.embedding_dim,
            "faces.embedding_dim ({}) must not exceed models.embedding_dim ({}) when faces.index_on_ingest is on",
            f.embedding_dim,
            self.models.embedding_dim
        );
        anyhow::ensure!((0.0..=1.0).contains(&f.min_score), "faces.min_score must be in [0, 1]");
        anyhow::ensure!(f.max_images_per_request >= 1, "faces.max_images_per_request must be at least 1");
        anyhow::ensure!(f.max_image_bytes >= 1, "faces.max_image_bytes must be at least 1");
        anyhow::ensure!(f.max_rerank_candidates >= 1, "faces.max_rerank_candidates must be at least 1");
        anyhow::ensure!(f.max_rerank_dim >= 1, "faces.max_rerank_dim must be at least 1");
        anyhow::ensure!((0.0..=1.0).contains(&f.rerank_threshold), "faces.rerank_threshold must be in [0, 1]");
        let server = &self.server;
        for (value, key) in [
            (server.max_concurrent_ingest, "server.max_concurrent_ingest"),
            (server.max_concurrent_search, "server.max_concurrent_search"),
            (server.max_concurrent_faces, "server.max_concurrent_faces"),
            (self.limits.max_batch_images, "limits.max_batch_images"),
            (self.limits.max_image_bytes, "limits.max_image_bytes"),
            (self.limits.max_metadata_depth, "limits.max_metadata_depth"),
            (self.limits.max_json_depth, "limits.max_json_depth"),
        ] {
            anyhow::ensure!(value >= 1, "{key} must be at least 1");
        }
        for (value, key) in [
            (server.header_read_timeout_ms, "server.header_read_timeout_ms"),
            (server.body_read_timeout_ms, "server.body_read_timeout_ms"),
            (server.request_timeout_ms, "server.request_timeout_ms"),
            (self.triton.call_timeout_ms, "triton.call_timeout_ms"),
            (self.triton.probe_interval_ms, "triton.probe_interval_ms"),
            (self.triton.probe_timeout_ms, "triton.probe_timeout_ms"),
        ] {
            anyhow::ensure!(value >= 1, "{key} must be at least 1 ms");
        }
        let endpoints = &self.triton.endpoints;
        anyhow::ensure!(!endpoints.is_empty(), "triton.endpoints must name at least one Triton gRPC endpoint");
        anyhow::ensure!(
            endpoints.iter().all(|endpoint| !endpoint.trim().is_empty()),
            "triton.endpoints has an empty entry: {endpoints:?}"
        );
        anyhow::ensure!(
            self.limits.decode_pixel_budget >= 1_000_000,
            "limits.decode_pixel_budget must be at least 1000000 pixels"
        );
        // Every object search visits each shard: a few keep it fast.
        anyhow::ensure!(
            (1..=MAX_OBJECT_GRAPH_SHARDS).contains(&self.store.object_graph_shards),
            "store.object_graph_shards must be between 1 and {MAX_OBJECT_GRAPH_SHARDS}"
        );
        self.validate_opensearch()?;
        self.validate_exposure()
    }

    fn validate_opensearch(&self) -> anyhow::Result<()> {
        let store = &self.store;
        if store.kind != StoreKind::Opensearch {
            return Ok(());
        }
        anyhow::ensure!(!store.opensearch_urls.is_empty(), "store.opensearch_urls must name at least one node");
        let index = &store.opensearch_index_settings;
        for (value, key) in [
            (index.shards, "shards"),
            (index.m, "m"),
            (index.ef_construction, "ef_construction"),
            (u32::try_from(index.ef_search).unwrap_or(u32::MAX), "ef_search"),
        ] {
            anyhow::ensure!(value >= 1, "store.opensearch_index_settings.{key} must be at least 1");
        }
        Ok(())
    }

    /// Serving beyond loopback needs write keys, unless explicitly opted out of.
    fn validate_exposure(&self) -> anyhow::Result<()> {
        let auth = &self.auth;
        let exposed = !self.server.listen.ip().is_loopback();
        anyhow::ensure!(
            !exposed || !auth.write_key_hashes.is_empty() || auth.allow_unauthenticated,
            "listening on {} (not loopback) without write keys: anyone could ingest and delete; set \
             auth.write_key_hashes or GATEWAY_WRITE_KEYS, or pass --allow-unauthenticated",
            self.server.listen
        );
        Ok(())
    }
}

impl TritonConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn call_timeout(&self) -> Duration {
        Duration::from_millis(self.call_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    pub fn initial_backoff(&self) -> Duration {
        Duration::from_millis(self.initial_backoff_ms)
    }
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms)
    }
    pub fn probe_timeout(&self) -> Duration {
        Duration::from_millis(self.probe_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_name_the_models() {
        let config = GatewayConfig::default();
        config.validate().unwrap();
        assert_eq!(config.models.ingest_model, "visual_ingest");
        assert_eq!(config.models.class_names.len(), 80);
        assert_eq!(config.models.class_names[0], "person");
    }

    #[test]
    fn file_overrides_only_the_keys_it_names() {
        let config = GatewayConfig::parse(
            "[search]\nmax_k = 50\n[triton]\nendpoints = [\"http://127.0.0.1:9001\", \"http://127.0.0.1:9002\"]\n\
             [store]\nkind = \"opensearch\"\n",
        )
        .unwrap();
        assert_eq!(config.search.max_k, 50);
        assert_eq!(config.search.default_k, 10);
        assert_eq!(config.triton.endpoints, ["http://127.0.0.1:9001", "http://127.0.0.1:9002"]);
        assert_eq!(config.triton.probe_interval_ms, 2_000);
        assert_eq!(config.store.kind, StoreKind::Opensearch);
    }

    #[test]
    fn exposed_listen_needs_write_keys_or_the_explicit_opt_out() {
        let mut config = GatewayConfig::default();
        config.server.listen = "0.0.0.0:8080".parse().unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("--allow-unauthenticated"), "{err}");
        config.auth.allow_unauthenticated = true;
        config.validate().unwrap();
        config.auth.allow_unauthenticated = false;
        config.auth.write_key_hashes = vec![crate::http::access::hash_key("a-long-random-write-key-000")];
        config.validate().unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        assert!(GatewayConfig::parse("[search]\nmax_kk = 5\n").is_err());
        let config = GatewayConfig::parse("[search]\nmax_k = 5\ndefault_k = 10\n").unwrap();
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("search.default_k"), "{err}");
        // The single `endpoint` key is gone: the error names the list that replaced it.
        let err = GatewayConfig::parse("[triton]\nendpoint = \"http://127.0.0.1:8001\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("endpoints"), "{err:#}");
        for (toml, key) in
            [("endpoints = []", "triton.endpoints"), ("probe_interval_ms = 0", "triton.probe_interval_ms")]
        {
            let err = GatewayConfig::parse(&format!("[triton]\n{toml}\n")).unwrap().validate().unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        for shards in [0, 17] {
            let config = GatewayConfig::parse(&format!("[store]\nobject_graph_shards = {shards}\n")).unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains("store.object_graph_shards"), "{shards}: {err}");
        }
        let config = GatewayConfig::parse("[store]\nobject_graph_shards = 4\n").unwrap();
        config.validate().unwrap();
        assert_eq!(config.store.object_graph_shards, 4);
    }
}
