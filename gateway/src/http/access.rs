//! Who may call what: API keys with a `read` and a `write` role, the Host allow-list
//! (against DNS rebinding) and the Origin check on state-changing requests (against
//! cross-site form posts). `policy` is the one table saying, per route, which role it needs
//! and which concurrency class it counts against; `guard` enforces it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::http::error::AppError;

/// What a caller may do; `Write` includes everything `Read` may.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Read,
    Write,
}

/// The concurrency limit a route counts against (`server.max_concurrent_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadClass {
    Ingest,
    Search,
    Faces,
}

/// What a route needs: the role (`None`: anyone) and its load class (`None`: unlimited).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutePolicy {
    pub role: Option<Role>,
    pub class: Option<LoadClass>,
}

/// The policy of a matched route. The page, the OpenAPI document and `/health` are public
/// (the page holds no data and asks for a key itself; health shows a summary without one).
/// `None`: not in the table; the guard then asks for a write key, so a new route is never
/// public by accident (and a test checks that every documented one is here).
pub fn policy(method: &Method, route: &str) -> Option<RoutePolicy> {
    use LoadClass::*;
    use Role::*;
    let (role, class) = match (method.as_str(), route) {
        ("GET" | "HEAD", "/" | "/openapi.json" | "/health") => (None, None),
        ("GET" | "HEAD", "/metrics" | "/classes" | "/images/{id}" | "/images/{id}/file") => (Some(Read), None),
        (
            "GET" | "HEAD",
            "/search/text"
            | "/images/{id}/similar"
            | "/images/{id}/objects/{index}/similar"
            | "/images/{id}/faces/{index}/similar",
        ) => (Some(Read), Some(Search)),
        (
            "POST",
            "/search/hybrid" | "/search/similar" | "/search/objects" | "/search/region" | "/search/faces" | "/detect",
        ) => (Some(Read), Some(Search)),
        ("POST", "/ingest" | "/ingest/batch") => (Some(Write), Some(Ingest)),
        ("POST", "/faces/embeddings" | "/faces/rerank") => (Some(Write), Some(Faces)),
        ("DELETE", "/images/{id}") => (Some(Write), Some(Ingest)),
        _ => return None,
    };
    Some(RoutePolicy { role, class })
}

const UNLISTED: RoutePolicy = RoutePolicy { role: Some(Role::Write), class: None };

/// Key hashes by role. Keys are long random strings, so one SHA-256 is enough to keep the
/// config from holding them in the clear (no slow hash needed against guessing).
#[derive(Clone, Debug, Default)]
pub struct ApiKeys {
    read: HashSet<[u8; 32]>,
    write: HashSet<[u8; 32]>,
}

/// Shortest plain key accepted: 128 bits of hex or base64 randomness.
pub const MIN_KEY_CHARS: usize = 24;

/// `sha256:<64 hex digits>`, the form keys take in the config file.
pub fn hash_key(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}

fn parse_hash(text: &str) -> Result<[u8; 32], String> {
    let hex_digits = text.strip_prefix("sha256:").ok_or_else(|| format!("{text:?} does not start with sha256:"))?;
    let bytes = hex::decode(hex_digits).map_err(|err| format!("{text:?} is not hex: {err}"))?;
    bytes.try_into().map_err(|_| format!("{text:?} is not 32 bytes"))
}

impl ApiKeys {
    /// The hashed keys of the config, naming the bad entry.
    pub fn from_config(auth: &AuthConfig) -> Result<ApiKeys, String> {
        let parse_all = |hashes: &[String], key: &str| -> Result<HashSet<[u8; 32]>, String> {
            hashes.iter().map(|h| parse_hash(h).map_err(|err| format!("auth.{key}: {err}"))).collect()
        };
        Ok(ApiKeys {
            read: parse_all(&auth.read_key_hashes, "read_key_hashes")?,
            write: parse_all(&auth.write_key_hashes, "write_key_hashes")?,
        })
    }

    /// With no key configured at all, authentication is off.
    pub fn enabled(&self) -> bool {
        !(self.read.is_empty() && self.write.is_empty())
    }

    /// The role of a presented key, `None` when it is not one of ours.
    pub fn role_of(&self, key: &str) -> Option<Role> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        if self.write.contains(&digest) {
            Some(Role::Write)
        } else if self.read.contains(&digest) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// The caller's role as the guard established it; handlers read it (health shows more to
/// a key holder). With authentication off every caller holds `Write`.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub role: Option<Role>,
}

/// Everything the guard checks against.
#[derive(Clone, Debug)]
pub struct AccessControl {
    pub keys: ApiKeys,
    /// Lowercase host names or IP literals; `*` allows any.
    pub allowed_hosts: Vec<String>,
    /// Lowercase `scheme://host[:port]` besides the request's own origin.
    pub allowed_origins: Vec<String>,
}

impl AccessControl {
    pub fn new(auth: &AuthConfig, listen: SocketAddr) -> Result<AccessControl, String> {
        let allowed_hosts = match auth.allowed_hosts.is_empty() {
            true => default_hosts(listen),
            false => auth.allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()).collect(),
        };
        Ok(AccessControl {
            keys: ApiKeys::from_config(auth)?,
            allowed_hosts,
            allowed_origins: auth
                .allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        })
    }

    fn host_allowed(&self, host: &str) -> bool {
        self.allowed_hosts.iter().any(|allowed| allowed == "*" || allowed == host)
    }
}

/// The listen address (unless it is a wildcard) and the loopback names.
fn default_hosts(listen: SocketAddr) -> Vec<String> {
    let mut hosts = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    if !listen.ip().is_unspecified() && !hosts.contains(&listen.ip().to_string()) {
        hosts.push(listen.ip().to_string());
    }
    hosts
}

/// The host part of a Host header (or of an origin's authority): lowercase, without the
/// port, IPv6 brackets removed.
fn host_name(authority: &str) -> String {
    let authority = authority.trim().to_ascii_lowercase();
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_owned();
    }
    authority.rsplit_once(':').map_or(authority.as_str(), |(host, _)| host).to_owned()
}

/// Whether a method can change state (the Origin check applies to it).
fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a request is refused before it reaches a handler.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no key, or not one of ours.
    Unauthenticated(&'static str),
    /// 403: a read key on a write route, a foreign Host, a cross-site request.
    Forbidden(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthenticated(message) => {
                let status = StatusCode::UNAUTHORIZED;
                let mut response = AppError::Rejected { status, message: message.into() }.into_response();
                response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
                response
            }
            Refusal::Forbidden(message) => {
                AppError::Rejected { status: StatusCode::FORBIDDEN, message }.into_response()
            }
        }
    }
}

/// The checks of one request, in order: Host, Origin, key and role. Pure, so every rule is
/// unit-tested without a server. `policy` is the route's entry in the table (`UNLISTED` when
/// it has none).
pub fn check(
    access: &AccessControl,
    method: &Method,
    headers: &HeaderMap,
    route: &str,
    policy: RoutePolicy,
) -> Result<Caller, Refusal> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    // Browsers always send Host; a client without one (HTTP/1.0) cannot be a rebinding page.
    if !host.is_empty() && !access.host_allowed(&host_name(host)) {
        return Err(Refusal::Forbidden(format!(
            "Host {host:?} is not served here (auth.allowed_hosts: {})",
            access.allowed_hosts.join(", ")
        )));
    }
    if is_state_changing(method) {
        check_origin(access, headers, host)?;
    }
    if !access.keys.enabled() {
        return Ok(Caller { role: Some(Role::Write) });
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .map(|value| value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(str::trim).unwrap_or(""));
    let role = match presented {
        None => None,
        Some(key) => Some(access.keys.role_of(key).ok_or(Refusal::Unauthenticated("the API key is not valid"))?),
    };
    match (policy.role, role) {
        (None, _) => Ok(Caller { role }),
        (Some(_), None) => Err(Refusal::Unauthenticated("this endpoint needs an API key: Authorization: Bearer <key>")),
        (Some(needed), Some(held)) if held < needed => {
            Err(Refusal::Forbidden(format!("{method} {route} needs a write key; this key may only read")))
        }
        (Some(_), Some(_)) => Ok(Caller { role }),
    }
}

/// A browser names the page that sent a request in Origin (and Sec-Fetch-Site): a
/// state-changing request must come from this gateway's own origin or an allowed one.
/// Clients that are not browsers send neither and are judged by their key alone.
fn check_origin(access: &AccessControl, headers: &HeaderMap, host: &str) -> Result<(), Refusal> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/').to_ascii_lowercase();
        let authority = origin.split_once("://").map_or("", |(_, authority)| authority);
        let same_origin = !host.is_empty() && authority == host.to_ascii_lowercase();
        if !same_origin && !access.allowed_origins.contains(&origin) {
            return Err(Refusal::Forbidden(format!(
                "cross-origin request from {origin:?} refused (auth.allowed_origins)"
            )));
        }
        return Ok(());
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("cross-site") => Err(Refusal::Forbidden("cross-site request refused".into())),
        _ => Ok(()),
    }
}

/// The middleware: looks the route's policy up once, refuses with 401/403 or passes the
/// request on with its `Caller` and its `RoutePolicy` (for load shedding) in the extensions.
pub async fn guard(State(access): State<Arc<AccessControl>>, mut request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let policy = policy(request.method(), &route).unwrap_or(UNLISTED);
    match check(&access, request.method(), request.headers(), &route, policy) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            request.extensions_mut().insert(policy);
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const READ_KEY: &str = "read-key-0123456789abcdef";
    const WRITE_KEY: &str = "write-key-0123456789abcdef";

    fn access() -> AccessControl {
        let auth = AuthConfig {
            read_key_hashes: vec![hash_key(READ_KEY)],
            write_key_hashes: vec![hash_key(WRITE_KEY)],
            allowed_origins: vec!["https://photos.example.com/".into()],
            ..AuthConfig::default()
        };
        AccessControl::new(&auth, SocketAddr::from(([127, 0, 0, 1], 8080))).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    /// `check` with the route's policy from the table, as the guard calls it.
    fn check(access: &AccessControl, method: &Method, headers: &HeaderMap, route: &str) -> Result<Caller, Refusal> {
        super::check(access, method, headers, route, policy(method, route).unwrap_or(UNLISTED))
    }

    fn bearer(key: &str) -> String {
        format!("Bearer {key}")
    }

    #[test]
    fn keys_are_stored_hashed_and_give_their_role() {
        let keys = access().keys;
        assert_eq!(keys.role_of(WRITE_KEY), Some(Role::Write));
        assert_eq!(keys.role_of(READ_KEY), Some(Role::Read));
        assert_eq!(keys.role_of("guess"), None);
        assert!(hash_key(WRITE_KEY).starts_with("sha256:") && !hash_key(WRITE_KEY).contains(WRITE_KEY));
        let bad = AuthConfig { read_key_hashes: vec!["md5:abc".into()], ..AuthConfig::default() };
        assert!(ApiKeys::from_config(&bad).unwrap_err().contains("auth.read_key_hashes"));
    }

    #[test]
    fn missing_or_wrong_keys_get_401_and_read_keys_cannot_write() {
        let access = access();
        let post = Method::POST;
        let err = check(&access, &post, &headers(&[]), "/ingest").unwrap_err();
        assert!(matches!(err, Refusal::Unauthenticated(_)), "{err:?}");
        let wrong = bearer("not-a-key");
        let err = check(&access, &post, &headers(&[("authorization", &wrong)]), "/ingest").unwrap_err();
        assert!(matches!(err, Refusal::Unauthenticated(_)), "{err:?}");
        let read = bearer(READ_KEY);
        let err = check(&access, &post, &headers(&[("authorization", &read)]), "/ingest").unwrap_err();
        assert!(matches!(err, Refusal::Forbidden(ref m) if m.contains("write key")), "{err:?}");
        assert!(check(&access, &post, &headers(&[("authorization", &read)]), "/search/hybrid").is_ok());
        let write = bearer(WRITE_KEY);
        assert!(check(&access, &post, &headers(&[("authorization", &write)]), "/ingest").is_ok());
        // Public routes need no key; a wrong one is still refused.
        assert!(check(&access, &Method::GET, &headers(&[]), "/health").is_ok());
        assert!(check(&access, &Method::GET, &headers(&[("authorization", &wrong)]), "/").is_err());
    }

    #[test]
    fn without_keys_everything_is_allowed_on_an_allowed_host() {
        let access = AccessControl::new(&AuthConfig::default(), SocketAddr::from(([127, 0, 0, 1], 8080))).unwrap();
        let caller = check(&access, &Method::DELETE, &headers(&[]), "/images/{id}").unwrap();
        assert_eq!(caller.role, Some(Role::Write));
    }

    #[test]
    fn foreign_hosts_are_refused_and_the_listen_host_is_allowed() {
        let access = access();
        let mut rebound = headers(&[]);
        rebound.insert(header::HOST, HeaderValue::from_static("attacker.example:8080"));
        let err = check(&access, &Method::GET, &rebound, "/health").unwrap_err();
        assert!(matches!(err, Refusal::Forbidden(ref m) if m.contains("allowed_hosts")), "{err:?}");
        for host in ["localhost:8080", "127.0.0.1", "[::1]:8080"] {
            let mut map = headers(&[]);
            map.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            assert!(check(&access, &Method::GET, &map, "/health").is_ok(), "{host}");
        }
        let lan = AccessControl::new(&AuthConfig::default(), SocketAddr::from(([10, 0, 0, 5], 80))).unwrap();
        assert!(lan.host_allowed("10.0.0.5"));
        let wildcard = AccessControl::new(&AuthConfig::default(), SocketAddr::from(([0, 0, 0, 0], 80))).unwrap();
        assert!(!wildcard.host_allowed("0.0.0.0"));
    }

    #[test]
    fn cross_origin_writes_are_refused_and_same_origin_ones_pass() {
        let access = access();
        let write = bearer(WRITE_KEY);
        let post = Method::POST;
        let foreign = headers(&[("authorization", &write), ("origin", "https://evil.example")]);
        assert!(matches!(check(&access, &post, &foreign, "/ingest"), Err(Refusal::Forbidden(_))));
        let same = headers(&[("authorization", &write), ("origin", "http://127.0.0.1:8080")]);
        assert!(check(&access, &post, &same, "/ingest").is_ok());
        let other_port = headers(&[("authorization", &write), ("origin", "http://127.0.0.1:9999")]);
        assert!(check(&access, &post, &other_port, "/ingest").is_err());
        let allowed = headers(&[("authorization", &write), ("origin", "https://photos.example.com")]);
        assert!(check(&access, &post, &allowed, "/ingest").is_ok());
        let cross_site = headers(&[("authorization", &write), ("sec-fetch-site", "cross-site")]);
        assert!(check(&access, &post, &cross_site, "/ingest").is_err());
        // Reads are not state-changing: a foreign page may not read them anyway (no CORS).
        let read = headers(&[("authorization", &write), ("origin", "https://evil.example")]);
        assert!(check(&access, &Method::GET, &read, "/search/text").is_ok());
    }

    #[test]
    fn unlisted_routes_need_a_write_key() {
        assert_eq!(policy(&Method::PATCH, "/images/{id}"), None);
        let read = bearer(READ_KEY);
        let err = check(&access(), &Method::GET, &headers(&[("authorization", &read)]), "/admin").unwrap_err();
        assert!(matches!(err, Refusal::Forbidden(_)), "{err:?}");
    }
}
