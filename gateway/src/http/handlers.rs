//! The handlers: each extracts, calls a service with the parts of `AppState` it needs, and
//! converts; the `#[utoipa::path]` on each is its entry in the generated OpenAPI document
//! (`openapi`). `router` wires them.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use visual_store::Page;

use crate::api::{
    BatchResponse, ClassesResponse, DeleteResult, DetectResponse, ErrorBody, FaceEmbeddingsForm, FaceEmbeddingsRequest,
    FaceEmbeddingsResponse, FaceQuery, FaceResult, HealthResponse, HealthSummary, HybridQuery, ImageResult, ImageView,
    IngestForm, IngestResult, ObjectQuery, ObjectResult, PageParams, QueryImageForm, RegionQueryForm, RerankRequest,
    RerankResponse, SearchResponse, TextSearchParams,
};
use crate::http::access::Caller;
use crate::http::error::{ApiJson, AppError};
use crate::http::forms::{
    is_multipart, json_or_photo, read_face_form, read_face_json, read_ingest_form, read_query_image, read_region_form,
};
use crate::http::state::AppState;
use crate::service::{detect, faces, health, images, ingest, region, search, ServiceError};

type Shared = State<Arc<AppState>>;

/// The page of results every search endpoint answers with.
fn search_response<T>(page: Page, started: Instant, results: Vec<T>) -> Json<SearchResponse<T>> {
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    Json(SearchResponse { k: page.k, offset: page.offset, count: results.len(), took_ms, results })
}

/// Every health check also refreshes the health gauges of `/metrics`.
async fn health_report(state: &AppState) -> (StatusCode, HealthResponse) {
    let scorer = state.scorer.name();
    let report = health::health(state.inference.as_ref(), state.store.as_ref(), &state.config.faces, scorer).await;
    state.metrics.record_health(&report);
    let status = if report.status == "ok" { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, report)
}

/// Ready means Triton, every required model and the store answer. With API keys
/// configured, a caller without one sees only the summary.
#[utoipa::path(get, path = "/health", tag = "service", responses(
    (status = 200, description = "Ready (the summary without a key when keys are configured)", body = HealthResponse),
    (status = 503, description = "Not ready: the body says what is missing", body = HealthResponse),
))]
pub async fn health(State(state): Shared, Extension(caller): Extension<Caller>) -> Response {
    let (status, report) = health_report(&state).await;
    match caller.role {
        Some(_) => (status, Json(report)).into_response(),
        None => (status, Json(HealthSummary::of(&report))).into_response(),
    }
}

/// The full health report on the ops address (`server.ops_listen`), without a key.
pub async fn ops_health(State(state): Shared) -> Response {
    let (status, report) = health_report(&state).await;
    (status, Json(report)).into_response()
}

/// Prometheus text exposition of the gateway's metrics. Each scrape runs the health check
/// first, so readiness, the store's size and each Triton endpoint's state are current.
#[utoipa::path(get, path = "/metrics", tag = "service", responses(
    (status = 200, description = "Metrics", body = String, content_type = "text/plain"),
))]
pub async fn metrics_text(State(state): Shared) -> Response {
    health_report(&state).await;
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], state.metrics.render()).into_response()
}

/// Stores one photo: 201 when created, 200 when the same bytes were already stored.
#[utoipa::path(post, path = "/ingest", tag = "ingest",
    request_body(content = IngestForm, content_type = "multipart/form-data"),
    responses(
        (status = 201, description = "Stored", body = IngestResult),
        (status = 200, description = "Already stored (same bytes)", body = IngestResult),
        (status = "4XX", description = "Bad form, oversized body, or not a decodable photo", body = ErrorBody),
        (status = "5XX", description = "Triton or the store unavailable (503) or broken (502)", body = ErrorBody),
    ))]
pub async fn ingest_image(
    State(state): Shared,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, AppError> {
    let mut form = read_ingest_form(multipart?, &state.config.limits).await?;
    let upload = match form.uploads.len() {
        1 => form.uploads.pop().expect("one upload"),
        0 => return Err(AppError::bad_request("the form has no image field")),
        n => return Err(AppError::bad_request(format!("POST /ingest takes one image, got {n}; use /ingest/batch"))),
    };
    let result = ingest::ingest_one(&state.ingest_deps(), upload, &form.fields).await?;
    let status = if result.status == "created" { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(result)).into_response())
}

/// Stores several photos; each gets its own entry, and one that fails does not fail the rest.
#[utoipa::path(post, path = "/ingest/batch", tag = "ingest",
    request_body(content = IngestForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "One entry per photo, in upload order", body = BatchResponse),
        (status = "4XX", description = "Bad form or oversized body", body = ErrorBody),
    ))]
pub async fn ingest_batch(
    State(state): Shared,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<BatchResponse>, AppError> {
    let form = read_ingest_form(multipart?, &state.config.limits).await?;
    if form.uploads.is_empty() {
        return Err(AppError::bad_request("the form has no image fields"));
    }
    Ok(Json(ingest::ingest_batch(&state.ingest_deps(), form.uploads, &form.fields).await))
}

/// The (validated) text query's embedding, from the cache or Triton.
async fn text_embedding(state: &AppState, text: &str) -> Result<Arc<Vec<f32>>, AppError> {
    Ok(search::embed_text(state.inference.as_ref(), &state.text_cache, &state.metrics, text).await?)
}

async fn image_embedding(state: &AppState, image: Bytes) -> Result<Vec<f32>, AppError> {
    Ok(search::embed_image(state.store.as_ref(), state.inference.as_ref(), image).await?)
}

/// Photos whose whole-image embedding is closest to the text's.
#[utoipa::path(get, path = "/search/text", tag = "search", params(TextSearchParams), responses(
    (status = 200, description = "Best first", body = SearchResponse<ImageResult>),
    (status = "4XX", description = "Empty or overlong query, bad k, offset or min_score", body = ErrorBody),
    (status = "5XX", description = "Triton or the store unavailable", body = ErrorBody),
))]
pub async fn search_text(
    State(state): Shared,
    params: Result<Query<TextSearchParams>, QueryRejection>,
) -> Result<Json<SearchResponse<ImageResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let text = search::query_text(params.q.as_deref())?;
    let (page, min_score) = search::paging(params.k, params.offset, params.min_score, &state.config.search)?;
    let query = text_embedding(&state, &text).await?;
    let filter = Default::default();
    let results =
        search::images(state.store.as_ref(), &query, &filter, page, min_score, params.include_metadata).await?;
    Ok(search_response(page, started, results))
}

/// Text search with filters: classes and confidence, dates, tags.
#[utoipa::path(post, path = "/search/hybrid", tag = "search", request_body = HybridQuery, responses(
    (status = 200, description = "Best first", body = SearchResponse<ImageResult>),
    (status = "4XX", description = "Malformed JSON, unknown fields or classes, bad values", body = ErrorBody),
    (status = "5XX", description = "Triton or the store unavailable", body = ErrorBody),
))]
pub async fn search_hybrid(
    State(state): Shared,
    ApiJson(query): ApiJson<HybridQuery>,
) -> Result<Json<SearchResponse<ImageResult>>, AppError> {
    let started = Instant::now();
    let text = search::query_text(Some(&query.text))?;
    let (page, min_score) = search::paging(query.k, query.offset, query.min_score, &state.config.search)?;
    let filter = search::hybrid_filter(&query, &state.config.models.class_names, state.config.limits.max_query_tags)?;
    let embedding = text_embedding(&state, &text).await?;
    let results =
        search::images(state.store.as_ref(), &embedding, &filter, page, min_score, query.include_metadata).await?;
    Ok(search_response(page, started, results))
}

/// Photos similar to an uploaded one.
#[utoipa::path(post, path = "/search/similar", tag = "search", params(PageParams),
    request_body(content = QueryImageForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Best first", body = SearchResponse<ImageResult>),
        (status = "4XX", description = "Bad form or paging, or not a decodable photo", body = ErrorBody),
        (status = "5XX", description = "Triton or the store unavailable", body = ErrorBody),
    ))]
pub async fn search_similar(
    State(state): Shared,
    params: Result<Query<PageParams>, QueryRejection>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<SearchResponse<ImageResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let (page, min_score) = search::paging(params.k, params.offset, params.min_score, &state.config.search)?;
    let image = read_query_image(multipart?, &state.config.limits).await?;
    let embedding = image_embedding(&state, image).await?;
    let filter = Default::default();
    let results =
        search::images(state.store.as_ref(), &embedding, &filter, page, min_score, params.include_metadata).await?;
    Ok(search_response(page, started, results))
}

/// The objects detected in a photo, without storing it (the stored record's for stored bytes).
#[utoipa::path(post, path = "/detect", tag = "search",
    request_body(content = QueryImageForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The photo's size and objects", body = DetectResponse),
        (status = "4XX", description = "Bad form, or not a decodable photo", body = ErrorBody),
        (status = "5XX", description = "Triton or the store unavailable", body = ErrorBody),
    ))]
pub async fn detect_objects(
    State(state): Shared,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<DetectResponse>, AppError> {
    let image = read_query_image(multipart?, &state.config.limits).await?;
    let class_names = &state.config.models.class_names;
    Ok(Json(detect::objects(state.store.as_ref(), state.inference.as_ref(), class_names, image).await?))
}

/// The class names the detector reports and class filters accept.
#[utoipa::path(get, path = "/classes", tag = "search", responses(
    (status = 200, description = "In the detector's class-id order", body = ClassesResponse),
))]
pub async fn classes(State(state): Shared) -> Json<ClassesResponse> {
    Json(ClassesResponse { classes: state.config.models.class_names.clone() })
}

/// Stored objects closest to a text (JSON body) or to an uploaded photo (multipart).
#[utoipa::path(post, path = "/search/objects", tag = "search", params(PageParams),
    request_body(content(
        (ObjectQuery = "application/json"),
        (QueryImageForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Best first", body = SearchResponse<ObjectResult>),
        (status = "4XX", description = "Bad body, classes or paging, or not a decodable photo", body = ErrorBody),
        (status = "5XX", description = "Triton or the store unavailable", body = ErrorBody),
    ))]
pub async fn search_objects(
    State(state): Shared,
    params: Result<Query<PageParams>, QueryRejection>,
    request: Request,
) -> Result<Json<SearchResponse<ObjectResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let (image, query) = json_or_photo(request, &state.config.limits, || ObjectQuery {
        k: params.k,
        offset: params.offset,
        min_score: params.min_score,
        ..Default::default()
    })
    .await?;
    // Everything is validated before Triton is asked for an embedding.
    let text = if image.is_none() { Some(search::query_text(Some(&query.text))?) } else { None };
    let (page, min_score) = search::paging(query.k, query.offset, query.min_score, &state.config.search)?;
    let filter = search::object_filter(&query, &state.config.models.class_names)?;
    let embedding = match (image, text) {
        (Some(image), _) => image_embedding(&state, image).await?,
        (None, Some(text)) => text_embedding(&state, &text).await?.to_vec(),
        (None, None) => unreachable!("a JSON query always has its text validated"),
    };
    let results = search::objects(state.store.as_ref(), &embedding, &filter, page, min_score).await?;
    Ok(search_response(page, started, results))
}

/// Stored objects closest to a box drawn on a photo: the box is cropped from the photo and
/// encoded as ingest does a detected object (`docs/crop-semantics.md`); nothing is stored.
#[utoipa::path(post, path = "/search/region", tag = "search", params(PageParams),
    request_body(content = RegionQueryForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Best first", body = SearchResponse<ObjectResult>),
        (status = "4XX", description = "Bad form, box or paging (400), not a decodable photo (422)", body = ErrorBody),
        (status = "5XX", description = "Triton or the store unavailable", body = ErrorBody),
    ))]
pub async fn search_region(
    State(state): Shared,
    params: Result<Query<PageParams>, QueryRejection>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<SearchResponse<ObjectResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let (page, min_score) = search::paging(params.k, params.offset, params.min_score, &state.config.search)?;
    let (image, text) = read_region_form(multipart?, &state.config.limits).await?;
    let bbox = region::parse_box(&text)?;
    let max_image_bytes = state.config.limits.max_image_bytes;
    let embedding = region::embed(state.inference.as_ref(), image, bbox, max_image_bytes).await?;
    let results = search::objects(state.store.as_ref(), &embedding, &Default::default(), page, min_score).await?;
    Ok(search_response(page, started, results))
}

/// The faces of several photos: multipart files (`image`, repeated) or JSON with base64
/// images; one result per image.
#[utoipa::path(post, path = "/faces/embeddings", tag = "faces",
    request_body(content(
        (FaceEmbeddingsRequest = "application/json"),
        (FaceEmbeddingsForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "One entry per image, in request order", body = FaceEmbeddingsResponse),
        (status = "4XX", description = "No images, too many, or a bad option", body = ErrorBody),
    ))]
pub async fn face_embeddings(State(state): Shared, request: Request) -> Result<Json<FaceEmbeddingsResponse>, AppError> {
    let faces_config = &state.config.faces;
    let max_images = faces_config.max_images_per_request;
    let (uploads, options) = if is_multipart(&request) {
        read_face_form(Multipart::from_request(request, &()).await?, max_images).await?
    } else {
        let ApiJson(body) = ApiJson::<FaceEmbeddingsRequest>::from_request(request, &()).await?;
        read_face_json(body, max_images)?
    };
    if uploads.is_empty() {
        return Err(AppError::bad_request("the request has no images"));
    }
    let concurrency = state.config.server.batch_concurrency;
    let budget = &state.pixel_budget;
    Ok(Json(faces::embeddings(state.inference.as_ref(), budget, faces_config, concurrency, uploads, options).await))
}

/// Scores a caller's candidate faces against a query face, best first.
#[utoipa::path(post, path = "/faces/rerank", tag = "faces", request_body = RerankRequest, responses(
    (status = 200, description = "Candidates at or over the threshold, best first", body = RerankResponse),
    (status = "4XX", description = "Bad vectors, lengths or limits", body = ErrorBody),
    (status = 500, description = "The rerank library failed", body = ErrorBody),
))]
pub async fn face_rerank(
    State(state): Shared,
    ApiJson(request): ApiJson<RerankRequest>,
) -> Result<Json<RerankResponse>, AppError> {
    // Scoring up to faces.max_rerank_candidates vectors (or a plugin) is CPU work: off
    // the async workers.
    let scored = tokio::task::spawn_blocking(move || {
        faces::rerank(&state.scorer, &state.metrics, &state.config.faces, &request)
    })
    .await
    .map_err(|err| ServiceError::Internal(format!("the rerank task failed: {err}")))?;
    Ok(Json(scored?))
}

/// Stored faces closest to a face embedding (JSON) or to the best face of a photo (multipart).
#[utoipa::path(post, path = "/search/faces", tag = "search", params(PageParams),
    request_body(content(
        (FaceQuery = "application/json"),
        (QueryImageForm = "multipart/form-data"),
    )),
    responses(
        (status = 200, description = "Best first", body = SearchResponse<FaceResult>),
        (status = "4XX", description = "Bad body or paging, or no usable face in the photo", body = ErrorBody),
        (status = "5XX", description = "Triton or the store unavailable", body = ErrorBody),
    ))]
pub async fn search_faces(
    State(state): Shared,
    params: Result<Query<PageParams>, QueryRejection>,
    request: Request,
) -> Result<Json<SearchResponse<FaceResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let (image, query) = json_or_photo(request, &state.config.limits, || FaceQuery {
        k: params.k,
        offset: params.offset,
        min_score: params.min_score,
        ..Default::default()
    })
    .await?;
    // Everything is validated before Triton is asked for the query face.
    let (page, min_score) = search::paging(query.k, query.offset, query.min_score, &state.config.search)?;
    let embedding = match image {
        Some(image) => faces::query_from_photo(state.inference.as_ref(), image).await?,
        None => faces::query_from_embedding(query.embedding, state.config.faces.embedding_dim)?,
    };
    let store_dim = state.config.models.embedding_dim;
    let results = faces::search(state.store.as_ref(), store_dim, embedding, page, min_score).await?;
    Ok(search_response(page, started, results))
}

/// Photos like a stored photo, from its stored embedding (no upload, no Triton call); the
/// photo itself comes first, at cosine 1.
#[utoipa::path(get, path = "/images/{id}/similar", tag = "search",
    params(("id" = String, Path, pattern = "^[0-9a-f]{64}$", description = "Image id: hex SHA-256 of the photo"),
           PageParams),
    responses(
        (status = 200, description = "Best first", body = SearchResponse<ImageResult>),
        (status = "4XX", description = "Not an image id or bad paging (400), no such image (404)", body = ErrorBody),
        (status = "5XX", description = "The store unavailable", body = ErrorBody),
    ))]
pub async fn similar_to_image(
    State(state): Shared,
    Path(id): Path<String>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<SearchResponse<ImageResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let (page, min_score) = search::paging(params.k, params.offset, params.min_score, &state.config.search)?;
    let store = state.store.as_ref();
    let embedding = images::stored_vector(store, &id, images::StoredPart::Photo).await?;
    let results =
        search::images(store, &embedding, &Default::default(), page, min_score, params.include_metadata).await?;
    Ok(search_response(page, started, results))
}

/// Stored objects like one object of a stored photo, from its stored embedding; that object
/// itself comes first, at cosine 1.
#[utoipa::path(get, path = "/images/{id}/objects/{index}/similar", tag = "search",
    params(("id" = String, Path, pattern = "^[0-9a-f]{64}$", description = "Image id: hex SHA-256 of the photo"),
           ("index" = usize, Path, description = "The object's index in the photo's `objects`"),
           PageParams),
    responses(
        (status = 200, description = "Best first", body = SearchResponse<ObjectResult>),
        (status = "4XX", description = "Not an image id, bad index or paging (400), no such image or object (404)",
         body = ErrorBody),
        (status = "5XX", description = "The store unavailable", body = ErrorBody),
    ))]
pub async fn similar_to_object(
    State(state): Shared,
    Path((id, index)): Path<(String, usize)>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<SearchResponse<ObjectResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let (page, min_score) = search::paging(params.k, params.offset, params.min_score, &state.config.search)?;
    let store = state.store.as_ref();
    let embedding = images::stored_vector(store, &id, images::StoredPart::Object(index)).await?;
    let results = search::objects(store, &embedding, &Default::default(), page, min_score).await?;
    Ok(search_response(page, started, results))
}

/// Stored faces like one face of a stored photo (stored with `faces.index_on_ingest`), from
/// its stored embedding; that face itself comes first, at cosine 1.
#[utoipa::path(get, path = "/images/{id}/faces/{index}/similar", tag = "search",
    params(("id" = String, Path, pattern = "^[0-9a-f]{64}$", description = "Image id: hex SHA-256 of the photo"),
           ("index" = usize, Path, description = "The face's index in the photo's `faces`"),
           PageParams),
    responses(
        (status = 200, description = "Best first", body = SearchResponse<FaceResult>),
        (status = "4XX", description = "Not an image id, bad index or paging (400), no such image or face (404)",
         body = ErrorBody),
        (status = "5XX", description = "The store unavailable", body = ErrorBody),
    ))]
pub async fn similar_to_face(
    State(state): Shared,
    Path((id, index)): Path<(String, usize)>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<SearchResponse<FaceResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let (page, min_score) = search::paging(params.k, params.offset, params.min_score, &state.config.search)?;
    let store = state.store.as_ref();
    let embedding = images::stored_vector(store, &id, images::StoredPart::Face(index)).await?;
    let results = faces::search(store, state.config.models.embedding_dim, embedding, page, min_score).await?;
    Ok(search_response(page, started, results))
}

/// A stored photo's record, without vectors.
#[utoipa::path(get, path = "/images/{id}", tag = "images",
    params(("id" = String, Path, pattern = "^[0-9a-f]{64}$", description = "Image id: hex SHA-256 of the photo")),
    responses(
        (status = 200, description = "The record", body = ImageView),
        (status = "4XX", description = "Not an image id (400) or no such image (404)", body = ErrorBody),
    ))]
pub async fn get_image(State(state): Shared, Path(id): Path<String>) -> Result<Json<ImageView>, AppError> {
    Ok(Json(images::get(state.store.as_ref(), &id).await?))
}

/// The photo file as uploaded.
#[utoipa::path(get, path = "/images/{id}/file", tag = "images",
    params(("id" = String, Path, pattern = "^[0-9a-f]{64}$", description = "Image id: hex SHA-256 of the photo")),
    responses(
        (status = 200, description = "The photo's bytes", content(
            ("image/jpeg"), ("image/png"), ("image/webp"), ("application/octet-stream"),
        )),
        (status = "4XX", description = "Not an image id (400) or no such photo (404)", body = ErrorBody),
    ))]
pub async fn get_image_file(State(state): Shared, Path(id): Path<String>) -> Result<Response, AppError> {
    let photo = images::file(&state.blobs, &id).await?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(photo.content_type)),
        // Content-addressed: the bytes under an id never change.
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
    ];
    Ok((headers, Body::from(photo.bytes)).into_response())
}

/// Deletes a photo's record and file.
#[utoipa::path(delete, path = "/images/{id}", tag = "images",
    params(("id" = String, Path, pattern = "^[0-9a-f]{64}$", description = "Image id: hex SHA-256 of the photo")),
    responses(
        (status = 200, description = "Deleted", body = DeleteResult),
        (status = "4XX", description = "Not an image id (400) or no such image (404)", body = ErrorBody),
    ))]
pub async fn delete_image(State(state): Shared, Path(id): Path<String>) -> Result<Json<DeleteResult>, AppError> {
    Ok(Json(images::delete(state.store.as_ref(), &state.blobs, &state.id_locks, &id).await?))
}
