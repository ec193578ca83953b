//! Integration tests of the client.
//!
//! The tests marked `#[ignore]` need a real Triton (clip_image and clip_text loaded) at
//! TRITON_GRPC_URL, e.g. `TRITON_GRPC_URL=http://127.0.0.1:8001 cargo test -p triton-client
//! --test triton_grpc -- --include-ignored`; the test command runs them that way against its
//! session server (tests/test_rust_grpc_client.py), and a plain `cargo test` lists them as
//! ignored. The transport-failure tests (closed port, silent server, a server that dies
//! under a call) need no Triton.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use triton_client::{ClientConfig, ClientError, InferRequest, InputTensor, ProbeConfig, TritonClient, TritonPool};

const IMAGE_MODEL: &str = "clip_image";

fn triton_url(test: &str) -> Option<String> {
    match std::env::var("TRITON_GRPC_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            test_skip::unavailable(test, "TRITON_GRPC_URL is not set");
            None
        }
    }
}

fn client(endpoint: String) -> TritonClient {
    TritonClient::new(ClientConfig { endpoint, request_timeout: Duration::from_secs(30), ..ClientConfig::default() })
        .expect("client")
}

/// Deterministic image in [0, 1], different per `seed`.
fn image(seed: u32) -> Vec<f32> {
    (0..3 * 256 * 256u32)
        .map(|i| ((i.wrapping_mul(2654435761).wrapping_add(seed * 40503)) >> 8 & 0xff) as f32 / 255.0)
        .collect()
}

#[tokio::test]
#[ignore = "needs a Triton at TRITON_GRPC_URL (tests/test_rust_grpc_client.py runs it)"]
async fn server_and_model_are_ready() {
    let Some(url) = triton_url("server_and_model_are_ready") else {
        return;
    };
    let client = client(url);
    assert!(client.server_live().await.unwrap());
    // With strict readiness the answer covers every model of the server, so a runner that
    // knows one failed to load says what to expect (TRITON_EXPECT_READY=0); by default, ready.
    let expect_ready = std::env::var("TRITON_EXPECT_READY").map_or(true, |v| v != "0");
    assert_eq!(client.server_ready().await.unwrap(), expect_ready);
    assert!(client.model_ready(IMAGE_MODEL).await.unwrap());

    let metadata = client.model_metadata(IMAGE_MODEL).await.unwrap();
    assert_eq!(metadata.name, IMAGE_MODEL);
    assert_eq!(metadata.inputs[0].name, "images");
    assert_eq!(metadata.inputs[0].datatype, "FP32");
    assert_eq!(metadata.inputs[0].shape, vec![-1, 3, 256, 256]);
    assert_eq!(metadata.outputs[0].name, "embeddings");
    assert_eq!(metadata.outputs[0].shape[0], -1);
}

#[tokio::test]
#[ignore = "needs a Triton at TRITON_GRPC_URL (tests/test_rust_grpc_client.py runs it)"]
async fn clip_image_returns_unit_norm_embeddings() {
    let Some(url) = triton_url("clip_image_returns_unit_norm_embeddings") else {
        return;
    };
    let client = client(url);
    let mut pixels = image(1);
    pixels.extend(image(2));
    let request = InferRequest {
        model: IMAGE_MODEL.into(),
        inputs: vec![InputTensor::fp32("images", vec![2, 3, 256, 256], &pixels)],
        outputs: vec!["embeddings".into()],
    };
    let response = client.infer(request.clone()).await.unwrap();
    let embeddings = response.output("embeddings").unwrap();
    assert_eq!(embeddings.datatype, "FP32");
    assert_eq!(embeddings.shape.len(), 2);
    assert_eq!(embeddings.shape[0], 2);
    let dim = embeddings.shape[1] as usize;
    let values = embeddings.as_f32().unwrap();
    for row in values.chunks_exact(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    assert_ne!(values[..dim], values[dim..], "different images gave the same embedding");

    // Same input, same answer: the client sends exactly the bytes it was given.
    let again = client.infer(request).await.unwrap();
    assert_eq!(again.output("embeddings").unwrap().as_f32().unwrap(), values);
}

#[tokio::test]
#[ignore = "needs a Triton at TRITON_GRPC_URL (tests/test_rust_grpc_client.py runs it)"]
async fn concurrent_calls_share_one_client() {
    let Some(url) = triton_url("concurrent_calls_share_one_client") else {
        return;
    };
    let client = client(url);
    let calls = (0..8u32).map(|seed| {
        let client = client.clone();
        tokio::spawn(async move {
            let request = InferRequest {
                model: IMAGE_MODEL.into(),
                inputs: vec![InputTensor::fp32("images", vec![1, 3, 256, 256], &image(seed))],
                outputs: vec![],
            };
            client.infer(request).await.unwrap().output("embeddings").unwrap().as_f32().unwrap()
        })
    });
    for call in calls {
        assert_eq!(call.await.unwrap().len(), 512);
    }
}

#[tokio::test]
#[ignore = "needs a Triton at TRITON_GRPC_URL (tests/test_rust_grpc_client.py runs it)"]
async fn wrong_shape_is_rejected_with_tritons_message() {
    let Some(url) = triton_url("wrong_shape_is_rejected_with_tritons_message") else {
        return;
    };
    // A retry would first pause initial_backoff (10 s): the bound below is far from both
    // a rejected call's few milliseconds and from that pause, so it cannot be met by chance.
    let client = TritonClient::new(ClientConfig {
        endpoint: url,
        request_timeout: Duration::from_secs(30),
        max_retries: 3,
        initial_backoff: Duration::from_secs(10),
        ..ClientConfig::default()
    })
    .expect("client");
    let request = InferRequest {
        model: IMAGE_MODEL.into(),
        inputs: vec![InputTensor::fp32("images", vec![1, 3, 128, 128], &vec![0.5; 3 * 128 * 128])],
        outputs: vec![],
    };
    let started = Instant::now();
    match client.infer(request).await {
        Err(ClientError::Rejected { model, message, .. }) => {
            println!("Triton said: {message}");
            assert_eq!(model, IMAGE_MODEL);
            assert!(message.contains("images"), "message does not name the input: {message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    // Never retried: the 10 s backoff pause before a second attempt did not happen.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[tokio::test]
#[ignore = "needs a Triton at TRITON_GRPC_URL (tests/test_rust_grpc_client.py runs it)"]
async fn unknown_model_is_not_found() {
    let Some(url) = triton_url("unknown_model_is_not_found") else {
        return;
    };
    let client = client(url);
    assert!(!client.model_ready("no_such_model").await.unwrap_or(false));
    let request = InferRequest {
        model: "no_such_model".into(),
        inputs: vec![InputTensor::fp32("images", vec![1, 3], &[0.0; 3])],
        outputs: vec![],
    };
    match client.infer(request).await {
        Err(ClientError::ModelNotFound { model, message, .. }) => {
            println!("Triton said: {message}");
            assert_eq!(model, "no_such_model");
            assert!(message.contains("no_such_model"), "{message}");
        }
        other => panic!("expected ModelNotFound, got {other:?}"),
    }
    assert!(client.model_metadata("no_such_model").await.is_err());
}

/// The `parameters` a model's config.pbtxt in model_repository/ declares (one
/// `parameters { key: "k" value { string_value: "v" } }` per line, as the project writes them).
fn declared_parameters(model: &str) -> HashMap<String, String> {
    let path = format!("{}/../model_repository/{model}/config.pbtxt", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("parameters { key: \"")?;
            let (key, rest) = rest.split_once('"')?;
            let value = rest.split_once("string_value: \"")?.1.split_once('"')?.0;
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}

#[tokio::test]
#[ignore = "needs a Triton at TRITON_GRPC_URL (tests/test_rust_grpc_client.py runs it)"]
async fn model_config_parameters_are_the_declared_ones() {
    let Some(url) = triton_url("model_config_parameters_are_the_declared_ones") else {
        return;
    };
    let client = client(url);
    let mut models = vec![IMAGE_MODEL];
    // face_align (the Rust backend in face mode) is loaded wherever that backend is built;
    // the gateway reads its alignment settings this way.
    if client.model_ready("face_align").await.unwrap() {
        models.push("face_align");
    } else {
        println!("face_align not loaded on this server: checked {IMAGE_MODEL} only");
    }
    for model in models {
        let declared = declared_parameters(model);
        assert!(!declared.is_empty(), "{model}: no parameters found in its config.pbtxt");
        assert_eq!(client.model_parameters(model).await.unwrap(), declared, "{model}");
    }
    match client.model_parameters("no_such_model").await {
        Err(ClientError::ModelNotFound { model, message, .. }) => {
            println!("Triton said: {message}");
            assert_eq!(model, "no_such_model");
        }
        other => panic!("expected ModelNotFound, got {other:?}"),
    }
}

/// clip_text, when the server has it loaded (scripts/run.sh and the pytest server do).
#[tokio::test]
#[ignore = "needs a Triton at TRITON_GRPC_URL (tests/test_rust_grpc_client.py runs it)"]
async fn clip_text_embeds_token_ids() {
    let Some(url) = triton_url("clip_text_embeds_token_ids") else {
        return;
    };
    let client = client(url);
    if !client.model_ready("clip_text").await.unwrap() {
        test_skip::unavailable("clip_text_embeds_token_ids", "clip_text is not loaded on this server");
        return;
    }
    // "a photo of a dog" and "... cat": SOT, BPE ids, EOT, zero padding.
    let mut tokens = vec![0i64; 2 * 77];
    tokens[..7].copy_from_slice(&[49406, 320, 1125, 539, 320, 1929, 49407]);
    tokens[77..84].copy_from_slice(&[49406, 320, 1125, 539, 320, 2368, 49407]);
    let request = InferRequest {
        model: "clip_text".into(),
        inputs: vec![InputTensor::int64("tokens", vec![2, 77], &tokens)],
        outputs: vec!["embeddings".into()],
    };
    let embeddings = client.infer(request).await.unwrap();
    let embeddings = embeddings.output("embeddings").unwrap();
    assert_eq!(embeddings.shape, vec![2, 512]);
    let values = embeddings.as_f32().unwrap();
    let (dog, cat) = values.split_at(512);
    let dot: f32 = dog.iter().zip(cat).map(|(a, b)| a * b).sum();
    assert!((dog.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-4);
    assert!(dot < 0.999, "dog and cat queries embed alike: {dot}");
}

/// A port nobody listens on: bind an ephemeral port, then release it.
/// A loopback port that refuses every connection for as long as the returned socket lives:
/// bound but never listening, so no other test (they run in parallel) can be given the port
/// and answer on it, as could happen to a port bound and released.
fn refusing_port() -> (u16, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    (socket.local_addr().unwrap().port(), socket)
}

#[tokio::test]
async fn closed_port_is_unavailable_after_the_configured_retries() {
    let (port, _refusing) = refusing_port();
    let client = TritonClient::new(ClientConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        max_retries: 3,
        initial_backoff: Duration::from_millis(20),
        ..ClientConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = client.server_ready().await.unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        ClientError::Unavailable { attempts, .. } => assert_eq!(*attempts, 4, "{err}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(err.to_string().contains("after 4 attempt(s)"), "{err}");
    println!("{err} (after {elapsed:?})");
    // The pauses between the attempts (20 + 40 + 80 ms) happened: a sleep never ends early.
    assert!(elapsed >= Duration::from_millis(140), "{elapsed:?}");
}

#[tokio::test]
async fn silent_server_hits_the_deadline() {
    // Accepts TCP (the kernel completes the handshake) but never speaks HTTP/2.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = TritonClient::new(ClientConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        request_timeout: Duration::from_millis(300),
        max_retries: 0,
        ..ClientConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = client.server_ready().await.unwrap_err();
    assert!(
        matches!(err, ClientError::DeadlineExceeded { timeout, .. } if timeout == Duration::from_millis(300)),
        "{err:?}"
    );
    // The deadline, not something else, ended the call: not before it, and bounded (10x).
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    drop(listener);
}

#[test]
fn invalid_endpoint_is_reported() {
    let err = TritonClient::new(ClientConfig { endpoint: "not a uri".into(), ..ClientConfig::default() }).unwrap_err();
    assert!(matches!(err, ClientError::InvalidEndpoint { .. }), "{err:?}");
    assert!(err.to_string().contains("not a uri"));
}

#[tokio::test]
async fn call_timeout_bounds_every_retry_together() {
    // Nothing listens: each attempt fails at once as Unavailable and is retried; 20 retries
    // with doubling pauses from 200 ms would take minutes, the call deadline (1 s) ends them.
    let (port, _refusing) = refusing_port();
    let client = TritonClient::new(ClientConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        call_timeout: Duration::from_secs(1),
        max_retries: 20,
        initial_backoff: Duration::from_millis(200),
        ..ClientConfig::default()
    })
    .unwrap();
    let started = Instant::now();
    let err = client.server_ready().await.unwrap_err();
    let elapsed = started.elapsed();
    println!("{err} (after {elapsed:?})");
    match &err {
        // 200 + 400 ms of pauses fit in the second; the next (800 ms) would not.
        ClientError::Unavailable { attempts, .. } => assert_eq!(*attempts, 3, "{err}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(elapsed < Duration::from_millis(1500), "the call deadline did not stop the retries: {elapsed:?}");
}

/// What the client sees when Triton is killed (kill -9) under a call: the kernel closes the
/// socket, and tonic reports UNKNOWN "transport error" with the socket's error beneath
/// ("connection reset" when unread bytes were left, else "stream closed because of a
/// broken pipe"). That is a lost connection, not an answer from Triton: the request is
/// sent once more (it may be what crashed the server), then the error is returned.
#[tokio::test]
async fn a_server_that_dies_under_a_call_is_a_lost_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (received, mut requests) = tokio::sync::mpsc::unbounded_channel();
    let server = tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let mut connection = h2::server::handshake(socket).await.unwrap();
            let Some(Ok((request, _respond))) = connection.accept().await else { continue };
            received.send(request.uri().path().to_owned()).unwrap();
            // Dies with the call in flight: no response, no GOAWAY; the socket just closes.
            drop(connection);
        }
    });
    let client = TritonClient::new(ClientConfig {
        endpoint: format!("http://127.0.0.1:{port}"),
        max_retries: 3,
        initial_backoff: Duration::from_millis(20),
        ..ClientConfig::default()
    })
    .unwrap();
    let err = client.server_ready().await.unwrap_err();
    println!("{err}");
    match &err {
        ClientError::ConnectionLost { attempts, message, .. } => {
            assert_eq!(*attempts, 2, "{err}");
            assert!(message.contains("reset") || message.contains("broken pipe"), "{err}");
        }
        other => panic!("expected ConnectionLost, got {other:?}"),
    }
    assert!(err.is_retryable());
    server.abort();
    let mut paths = Vec::new();
    while let Ok(path) = requests.try_recv() {
        paths.push(path);
    }
    assert_eq!(paths, ["/inference.GRPCInferenceService/ServerReady"; 2]);
}

fn pool(endpoints: &[String]) -> TritonPool {
    let client = ClientConfig { request_timeout: Duration::from_secs(30), ..ClientConfig::default() };
    let probe = ProbeConfig { interval: Duration::from_secs(60), timeout: Duration::from_secs(5) };
    TritonPool::new(endpoints, client, probe).unwrap()
}

#[tokio::test]
async fn a_probe_takes_an_endpoint_nobody_listens_on_out() {
    let (port, _refusing) = refusing_port();
    let closed = format!("http://127.0.0.1:{port}");
    let pool = pool(std::slice::from_ref(&closed));
    let started = Instant::now();
    let status = pool.probe().await.remove(0);
    println!("{status:?} after {:?}", started.elapsed());
    assert_eq!(status.endpoint, closed);
    assert!(!status.ready && status.taken_out == 1 && status.in_flight == 0, "{status:?}");
    let error = status.last_error.unwrap();
    assert!(error.contains("Connection refused") && error.contains("after 1 attempt"), "{error}");
    // One attempt within the probe's deadline, no retries.
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(matches!(
        TritonPool::new(
            &[],
            ClientConfig::default(),
            ProbeConfig { interval: Duration::from_secs(1), timeout: Duration::from_secs(1) }
        ),
        Err(ClientError::NoEndpoint)
    ));
}

#[tokio::test]
#[ignore = "needs a Triton at TRITON_GRPC_URL (tests/test_rust_grpc_client.py runs it)"]
async fn a_pool_sends_calls_past_a_dead_endpoint_to_triton() {
    let Some(url) = triton_url("a_pool_sends_calls_past_a_dead_endpoint_to_triton") else {
        return;
    };
    let (port, _refusing) = refusing_port();
    let closed = format!("http://127.0.0.1:{port}");
    let pool = pool(&[closed.clone(), url.clone()]);
    for seed in 0..6 {
        let request = InferRequest {
            model: IMAGE_MODEL.into(),
            inputs: vec![InputTensor::fp32("images", vec![1, 3, 256, 256], &image(seed))],
            outputs: vec!["embeddings".into()],
        };
        let response = pool.infer(request).await.unwrap();
        assert_eq!(response.output("embeddings").unwrap().as_f32().unwrap().len(), 512);
    }
    assert!(pool.model_ready(IMAGE_MODEL).await.unwrap());
    assert!(pool.model_metadata(IMAGE_MODEL).await.unwrap().outputs.iter().any(|o| o.name == "embeddings"));
    let [dead, alive] = &pool.endpoints()[..] else { panic!("two endpoints") };
    // The closed port was tried by at most the first call, and taken out for good.
    assert!(!dead.ready && dead.taken_out == 1, "{dead:?}");
    // Ready and idle; not "never taken out": the pool's first probe runs as it starts, and a
    // Triton busy with a parallel test may miss that probe's deadline once (seen in CI).
    assert!(alive.ready && alive.in_flight == 0, "{alive:?}");
    // A rejected request is returned as Triton said it, from the one live endpoint.
    let bad = InferRequest {
        model: IMAGE_MODEL.into(),
        inputs: vec![InputTensor::fp32("images", vec![1, 3, 128, 128], &vec![0.5; 3 * 128 * 128])],
        outputs: vec![],
    };
    assert!(matches!(pool.infer(bad).await, Err(ClientError::Rejected { .. })));
    let expect_ready = std::env::var("TRITON_EXPECT_READY").map_or(true, |v| v != "0");
    let states = pool.probe().await;
    assert_eq!((states[0].ready, states[1].ready), (false, expect_ready), "{states:?}");
}
