//! The HTTP surface: `app(state) -> Router` with every endpoint and the layers around
//! them (body limit, JSON errors, metrics, compression, tracing). Handlers only
//! extract, validate through `search` / `ingest`, and convert.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::compression::CompressionLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::trace::TraceLayer;

use crate::api::{
    FaceEmbeddingsRequest, FaceEmbeddingsResponse, FaceQuery, FaceResult, HybridQuery, ImageResult, ImageView,
    ObjectQuery, ObjectResult, PageParams, RerankRequest, RerankResponse, SearchResponse,
};
use crate::blobs::{is_valid_id, sniff_content_type};
use crate::error::{ApiJson, AppError};
use crate::faces;
use crate::ingest::{self, Upload};
use crate::metrics::track_http;
use crate::search;
use crate::state::AppState;

type Shared = State<Arc<AppState>>;

pub fn app(state: Arc<AppState>) -> Router {
    let max_body = state.config.server.max_request_bytes;
    let metrics = state.metrics.clone();
    Router::new()
        .route("/", get(crate::page::search_page))
        .route("/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(crate::openapi::document))
        .route("/ingest", post(ingest_image))
        .route("/ingest/batch", post(ingest_batch))
        .route("/search/text", get(search_text))
        .route("/search/hybrid", post(search_hybrid))
        .route("/search/similar", post(search_similar))
        .route("/search/objects", post(search_objects))
        .route("/search/faces", post(search_faces))
        .route("/faces/embeddings", post(face_embeddings))
        .route("/faces/rerank", post(face_rerank))
        .route("/images/{id}", get(get_image).delete(delete_image))
        .route("/images/{id}/file", get(get_image_file))
        .with_state(state)
        // Innermost first: the limit's bare 413 is turned into JSON by json_errors.
        .layer(RequestBodyLimitLayer::new(max_body))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(max_body, json_errors))
        .layer(CompressionLayer::new())
        .layer(middleware::from_fn_with_state(metrics, track_http))
        .layer(TraceLayer::new_for_http())
}

/// Any error response not already JSON (a layer's 413, an unknown route's 404, a
/// wrong method's 405) gets the `{"error": ...}` body every handler error has.
async fn json_errors(State(max_body): State<usize>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = match (status, text.is_empty()) {
        (StatusCode::PAYLOAD_TOO_LARGE, _) => format!("request body too large: the limit is {max_body} bytes"),
        (StatusCode::NOT_FOUND, true) => "no such endpoint".to_owned(),
        (_, true) => status.canonical_reason().unwrap_or("error").to_owned(),
        (_, false) => text,
    };
    let mut response = (status, Json(json!({ "error": message }))).into_response();
    for (name, value) in parts.headers.iter().filter(|(name, _)| *name == header::ALLOW) {
        response.headers_mut().insert(name, value.clone());
    }
    response
}

fn elapsed_ms(started: Instant) -> f64 {
    started.elapsed().as_secs_f64() * 1000.0
}

/// The page of results every search endpoint answers with.
fn search_response<T>(page: visual_store::Page, started: Instant, results: Vec<T>) -> Json<SearchResponse<T>> {
    Json(SearchResponse { k: page.k, offset: page.offset, count: results.len(), took_ms: elapsed_ms(started), results })
}

async fn health(State(state): Shared) -> Response {
    let triton = state.inference.health().await;
    let store = match state.store.ready().await {
        Ok(()) => match state.store.count().await {
            Ok(images) => json!({ "kind": state.store.kind(), "ready": true, "images": images }),
            Err(err) => json!({ "kind": state.store.kind(), "ready": false, "error": err.to_string() }),
        },
        Err(err) => json!({ "kind": state.store.kind(), "ready": false, "error": err.to_string() }),
    };
    let ready = triton.ready && store["ready"] == true;
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let faces = json!({
        "model": state.config.faces.model,
        "index_on_ingest": state.config.faces.index_on_ingest,
        "rerank_scorer": state.scorer.name(),
    });
    let body =
        json!({ "status": if ready { "ok" } else { "unavailable" }, "triton": triton, "store": store, "faces": faces });
    (status, Json(body)).into_response()
}

async fn metrics_text(State(state): Shared) -> Response {
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], state.metrics.render()).into_response()
}

async fn ingest_image(
    State(state): Shared,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, AppError> {
    let mut form = ingest::read_form(multipart?).await?;
    let upload = match form.uploads.len() {
        1 => form.uploads.pop().expect("one upload"),
        0 => return Err(AppError::BadRequest("the form has no image field".into())),
        n => return Err(AppError::BadRequest(format!("POST /ingest takes one image, got {n}; use /ingest/batch"))),
    };
    let result = ingest::ingest_one(&state, upload, &form.fields).await?;
    let status = if result.status == "created" { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(result)).into_response())
}

async fn ingest_batch(
    State(state): Shared,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, AppError> {
    let form = ingest::read_form(multipart?).await?;
    if form.uploads.is_empty() {
        return Err(AppError::BadRequest("the form has no image fields".into()));
    }
    let uploads: Vec<Upload> = form.uploads;
    Ok(Json(ingest::ingest_batch(&state, uploads, &form.fields).await).into_response())
}

async fn search_text(
    State(state): Shared,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<SearchResponse<ImageResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let text = search::query_text(params.q.as_deref())?;
    let page = search::page(params.k, params.offset, &state.config.search)?;
    let min_score = search::min_score(params.min_score)?;
    let query = search::embed_text(&state, &text).await?;
    let results = search::images(&state, &query, &Default::default(), page, min_score).await?;
    Ok(search_response(page, started, results))
}

async fn search_hybrid(
    State(state): Shared,
    ApiJson(query): ApiJson<HybridQuery>,
) -> Result<Json<SearchResponse<ImageResult>>, AppError> {
    let started = Instant::now();
    let text = search::query_text(Some(&query.text))?;
    let page = search::page(query.k, query.offset, &state.config.search)?;
    let min_score = search::min_score(query.min_score)?;
    let filter = search::hybrid_filter(&query, &state.config.models.class_names)?;
    let embedding = search::embed_text(&state, &text).await?;
    let results = search::images(&state, &embedding, &filter, page, min_score).await?;
    Ok(search_response(page, started, results))
}

async fn search_similar(
    State(state): Shared,
    params: Result<Query<PageParams>, QueryRejection>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<SearchResponse<ImageResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let page = search::page(params.k, params.offset, &state.config.search)?;
    let min_score = search::min_score(params.min_score)?;
    let image = ingest::read_query_image(multipart?).await?;
    let embedding = search::embed_image(&state, image).await?;
    let results = search::images(&state, &embedding, &Default::default(), page, min_score).await?;
    Ok(search_response(page, started, results))
}

/// JSON body (a text query with optional class filter) or a multipart image upload.
async fn search_objects(
    State(state): Shared,
    params: Result<Query<PageParams>, QueryRejection>,
    request: Request,
) -> Result<Json<SearchResponse<ObjectResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let is_multipart =
        request.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"multipart/form-data"));
    let (image, query) = if is_multipart {
        let multipart = Multipart::from_request(request, &()).await?;
        let query =
            ObjectQuery { k: params.k, offset: params.offset, min_score: params.min_score, ..Default::default() };
        (Some(ingest::read_query_image(multipart).await?), query)
    } else {
        let ApiJson(query) = ApiJson::<ObjectQuery>::from_request(request, &()).await?;
        (None, query)
    };
    // Everything is validated before Triton is asked for an embedding.
    let text = if image.is_none() { Some(search::query_text(Some(&query.text))?) } else { None };
    let page = search::page(query.k, query.offset, &state.config.search)?;
    let min_score = search::min_score(query.min_score)?;
    let filter = search::object_filter(&query, &state.config.models.class_names)?;
    let embedding = match (image, text) {
        (Some(image), _) => search::embed_image(&state, image).await?,
        (None, Some(text)) => search::embed_text(&state, &text).await?.to_vec(),
        (None, None) => unreachable!("a JSON query always has its text validated"),
    };
    let results = search::objects(&state, &embedding, &filter, page, min_score).await?;
    Ok(search_response(page, started, results))
}

fn is_multipart(request: &Request) -> bool {
    request.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"multipart/form-data"))
}

/// Multipart files (`image`, repeated) or JSON with base64 images; one result per image.
async fn face_embeddings(State(state): Shared, request: Request) -> Result<Json<FaceEmbeddingsResponse>, AppError> {
    let max_images = state.config.faces.max_images_per_request;
    let (uploads, options) = if is_multipart(&request) {
        faces::read_form(Multipart::from_request(request, &()).await?, max_images).await?
    } else {
        let ApiJson(body) = ApiJson::<FaceEmbeddingsRequest>::from_request(request, &()).await?;
        faces::read_json(body, max_images)?
    };
    if uploads.is_empty() {
        return Err(AppError::BadRequest("the request has no images".into()));
    }
    Ok(Json(faces::embeddings(&state, uploads, options).await))
}

async fn face_rerank(
    State(state): Shared,
    ApiJson(request): ApiJson<RerankRequest>,
) -> Result<Json<RerankResponse>, AppError> {
    Ok(Json(faces::rerank(&state, &request)?))
}

/// JSON `{embedding, k, offset, min_score}` or a multipart photo (its best face; `?k=`).
async fn search_faces(
    State(state): Shared,
    params: Result<Query<PageParams>, QueryRejection>,
    request: Request,
) -> Result<Json<SearchResponse<FaceResult>>, AppError> {
    let started = Instant::now();
    let Query(params) = params?;
    let (image, query) = if is_multipart(&request) {
        let multipart = Multipart::from_request(request, &()).await?;
        let query = FaceQuery { k: params.k, offset: params.offset, min_score: params.min_score, ..Default::default() };
        (Some(ingest::read_query_image(multipart).await?), query)
    } else {
        let ApiJson(query) = ApiJson::<FaceQuery>::from_request(request, &()).await?;
        (None, query)
    };
    // Everything is validated before Triton is asked for the query face.
    let page = search::page(query.k, query.offset, &state.config.search)?;
    let min_score = search::min_score(query.min_score)?;
    let embedding = match image {
        Some(image) => faces::query_from_photo(&state, image).await?,
        None => faces::query_from_embedding(&state, query.embedding)?,
    };
    let results = faces::search(&state, embedding, page, min_score).await?;
    Ok(search_response(page, started, results))
}

fn checked_id(id: &str) -> Result<&str, AppError> {
    if is_valid_id(id) {
        Ok(id)
    } else {
        Err(AppError::BadRequest(format!(
            "{id:?} is not an image id (64 lowercase hex digits, the SHA-256 of the photo)"
        )))
    }
}

async fn get_image(State(state): Shared, Path(id): Path<String>) -> Result<Json<ImageView>, AppError> {
    let id = checked_id(&id)?;
    match state.store.get(id).await? {
        Some(record) => Ok(Json(ImageView::from(&record))),
        None => Err(AppError::NotFound(format!("no image {id}"))),
    }
}

async fn get_image_file(State(state): Shared, Path(id): Path<String>) -> Result<Response, AppError> {
    let id = checked_id(&id)?;
    let bytes = state
        .blobs
        .get(id)
        .await
        .map_err(|e| AppError::Internal(format!("reading the photo: {e}")))?
        .ok_or_else(|| AppError::NotFound(format!("no photo {id}")))?;
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(sniff_content_type(&bytes))),
        // Content-addressed: the bytes under an id never change.
        (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=31536000, immutable")),
    ];
    Ok((headers, Body::from(bytes)).into_response())
}

async fn delete_image(State(state): Shared, Path(id): Path<String>) -> Result<Response, AppError> {
    let id = checked_id(&id)?;
    if !state.store.delete(id).await? {
        return Err(AppError::NotFound(format!("no image {id}")));
    }
    // The record goes first: a crash in between leaves an unreferenced file, never a
    // record without its photo.
    state.blobs.delete(id).await.map_err(|e| AppError::Internal(format!("deleting the photo: {e}")))?;
    Ok((StatusCode::OK, Json(json!({ "id": id, "deleted": true }))).into_response())
}
