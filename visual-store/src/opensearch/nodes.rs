//! The nodes of an OpenSearch cluster as the store sees them: requests go round-robin to
//! the nodes that answer; a node whose connection fails is taken out and the request moves
//! to the next one; a node taken out is probed in the background (`GET /`) with doubling
//! pauses, and comes back at its first answer.
//!
//! The opensearch crate (2.4) has only a single-node connection pool whose `next()` never
//! hears how a request went, so the store keeps one single-node client per node and picks
//! among them here.
//!
//! Only transport failures (refused, reset, timed out) move a request: an HTTP status is
//! the cluster's answer and another node would give the same. Moving a write is safe
//! because every write is idempotent by image id (`create` answers 409 for an id already
//! stored; a repeated delete finds nothing).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use opensearch::http::response::Response;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::http::{Method, Url};
use opensearch::OpenSearch;

use crate::{NodeHealth, Result, StoreError};

/// Probe pauses double from `probe_interval` up to this many times it.
const MAX_BACKOFF_FACTOR: u32 = 32;

#[derive(Debug, Default)]
struct NodeState {
    failures: u32,
    /// `Some` while out: when to probe it next.
    next_probe: Option<Instant>,
    last_error: Option<String>,
}

struct Node {
    url: String,
    client: OpenSearch,
    state: Mutex<NodeState>,
}

pub(crate) struct NodePool {
    nodes: Vec<Node>,
    /// Where the next request starts its round.
    next: AtomicUsize,
    probe_interval: Duration,
    probe_timeout: Duration,
    /// A probe task is running; it ends once every node is back.
    probing: AtomicBool,
}

impl NodePool {
    /// One client per URL (each bounded by `request_timeout`); fails on a malformed URL or
    /// an empty list.
    pub(crate) fn new(urls: &[String], request_timeout: Duration, probe_interval: Duration) -> Result<Arc<NodePool>> {
        if urls.is_empty() {
            return Err(StoreError::Unavailable("opensearch: no node URL configured".into()));
        }
        let nodes = urls
            .iter()
            .map(|url| {
                let bad_url =
                    |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("opensearch url {url:?}: {e}"));
                let parsed = Url::parse(url).map_err(|e| bad_url(&e))?;
                let transport = TransportBuilder::new(SingleNodeConnectionPool::new(parsed))
                    .timeout(request_timeout)
                    .build()
                    .map_err(|e| bad_url(&e))?;
                Ok(Node { url: url.clone(), client: OpenSearch::new(transport), state: Mutex::default() })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(NodePool {
            nodes,
            next: AtomicUsize::new(0),
            probe_interval,
            probe_timeout: probe_interval.clamp(Duration::from_millis(100), Duration::from_secs(5)),
            probing: AtomicBool::new(false),
        }))
    }

    /// Sends one request, built by `request` for a node's client, to the nodes in turn until
    /// one answers; the error of the last node tried when none does. `context` names the
    /// request in errors.
    pub(crate) async fn send<F, Fut>(self: &Arc<Self>, context: &str, request: F) -> Result<Response>
    where
        F: Fn(OpenSearch) -> Fut,
        Fut: Future<Output = std::result::Result<Response, opensearch::Error>>,
    {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let states: Vec<(bool, u32)> =
            self.nodes.iter().map(|node| node.with_state(|s| (s.next_probe.is_some(), s.failures))).collect();
        let order = attempt_order(&states, start);
        let mut last_error = None;
        for &index in &order {
            let node = &self.nodes[index];
            match request(node.client.clone()).await {
                Ok(response) => {
                    node.with_state(|s| *s = NodeState::default());
                    return Ok(response);
                }
                Err(error) => {
                    let cause = if error.is_timeout() { "timed out" } else { "no answer" };
                    let message = format!("opensearch {context}: {cause}: node {}: {error}", node.url);
                    tracing::warn!(node = %node.url, %message, "OpenSearch node taken out");
                    self.take_out(index, message.clone());
                    last_error = Some(message);
                }
            }
        }
        let mut message = last_error.expect("at least one node is tried");
        if order.len() > 1 {
            message.push_str(&format!(" (none of the {} nodes answered)", order.len()));
        }
        Err(StoreError::Unavailable(message))
    }

    pub(crate) fn health(&self) -> Vec<NodeHealth> {
        self.nodes
            .iter()
            .map(|node| {
                node.with_state(|s| NodeHealth {
                    url: node.url.clone(),
                    out: s.next_probe.is_some(),
                    failures: s.failures,
                    last_error: s.last_error.clone(),
                })
            })
            .collect()
    }

    fn take_out(self: &Arc<Self>, index: usize, error: String) {
        self.nodes[index].fail(error, self.probe_interval);
        if !self.probing.swap(true, Ordering::AcqRel) {
            tokio::spawn(probe_until_all_back(Arc::downgrade(self)));
        }
    }

    /// Probes every node out whose pause is over; returns whether any node is still out.
    async fn probe_due(&self) -> bool {
        let now = Instant::now();
        let mut still_out = false;
        for node in &self.nodes {
            let due = node.with_state(|s| s.next_probe.map(|at| at <= now));
            match due {
                None => {}
                Some(false) => still_out = true,
                Some(true) => {
                    let probe = node.client.send::<(), ()>(
                        Method::Get,
                        "/",
                        Default::default(),
                        None,
                        None,
                        Some(self.probe_timeout),
                    );
                    match probe.await {
                        Ok(_) => {
                            tracing::info!(node = %node.url, "OpenSearch node answers again");
                            node.with_state(|s| *s = NodeState::default());
                        }
                        Err(error) => {
                            node.fail(format!("probe of {}: {error}", node.url), self.probe_interval);
                            still_out = true;
                        }
                    }
                }
            }
        }
        still_out
    }
}

impl Node {
    fn with_state<T>(&self, f: impl FnOnce(&mut NodeState) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    /// Counts a failure and sets the next probe after the backoff it earns.
    fn fail(&self, error: String, probe_interval: Duration) {
        self.with_state(|s| {
            s.failures = s.failures.saturating_add(1);
            s.last_error = Some(error);
            s.next_probe = Some(Instant::now() + backoff(probe_interval, s.failures));
        });
    }
}

/// The background prober: runs while some node is out and the pool exists.
async fn probe_until_all_back(pool: Weak<NodePool>) {
    loop {
        let Some(interval) = pool.upgrade().map(|p| p.probe_interval) else { return };
        tokio::time::sleep(interval).await;
        let Some(pool) = pool.upgrade() else { return };
        if pool.probe_due().await {
            continue;
        }
        pool.probing.store(false, Ordering::Release);
        // A node taken out between the probe and the store above saw a prober running and
        // started none: carry on for it.
        let some_out = pool.nodes.iter().any(|node| node.with_state(|s| s.next_probe.is_some()));
        if !some_out || pool.probing.swap(true, Ordering::AcqRel) {
            return;
        }
    }
}

/// Pause before probing a node again after `failures` failures in a row: `interval`,
/// doubled per further failure, at most `MAX_BACKOFF_FACTOR` times it.
fn backoff(interval: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(MAX_BACKOFF_FACTOR.ilog2());
    interval * (1 << doublings)
}

/// The order in which one request tries the nodes, given each node's (out, failures): the
/// nodes in service first, taking turns by `start` (counted over the nodes in service, so
/// each gets an equal share while another is out); then the nodes out, fewest failures
/// first, since with every node out (a cluster restarting) one may be back before its probe.
fn attempt_order(states: &[(bool, u32)], start: usize) -> Vec<usize> {
    let (mut order, mut out): (Vec<usize>, Vec<usize>) = (0..states.len()).partition(|&i| !states[i].0);
    for nodes in [&mut order, &mut out] {
        if !nodes.is_empty() {
            let turn = start % nodes.len();
            nodes.rotate_left(turn);
        }
    }
    // Stable: nodes out with as many failures keep taking turns.
    out.sort_by_key(|&i| states[i].1);
    order.extend(out);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_in_service_take_turns() {
        let all_in = [(false, 0); 3];
        assert_eq!(attempt_order(&all_in, 0), vec![0, 1, 2]);
        assert_eq!(attempt_order(&all_in, 4), vec![1, 2, 0]);
    }

    #[test]
    fn nodes_out_come_last_fewest_failures_first() {
        let states = [(true, 5), (false, 0), (true, 1), (false, 0)];
        assert_eq!(attempt_order(&states, 0), vec![1, 3, 2, 0]);
        assert_eq!(attempt_order(&states, 1), vec![3, 1, 2, 0]);
    }

    #[test]
    fn nodes_in_service_share_the_turns_of_one_out() {
        let states = [(false, 0), (true, 1), (false, 0)];
        let mut first = [0; 3];
        for start in 0..10 {
            first[attempt_order(&states, start)[0]] += 1;
        }
        assert_eq!(first, [5, 0, 5]);
    }

    #[test]
    fn every_node_is_tried_once_even_when_all_are_out() {
        let states = [(true, 2), (true, 2), (true, 1)];
        let order = attempt_order(&states, 1);
        assert_eq!(order, vec![2, 1, 0]);
    }

    #[test]
    fn probe_pauses_double_up_to_a_bound() {
        let second = Duration::from_secs(1);
        assert_eq!(backoff(second, 1), second);
        assert_eq!(backoff(second, 2), 2 * second);
        assert_eq!(backoff(second, 4), 8 * second);
        assert_eq!(backoff(second, 100), 32 * second);
    }

    #[test]
    fn an_empty_or_malformed_url_list_is_refused() {
        let timeout = Duration::from_secs(1);
        assert!(NodePool::new(&[], timeout, timeout).is_err());
        let error = NodePool::new(&["not a url".into()], timeout, timeout).err().unwrap();
        assert!(error.to_string().contains("not a url"), "{error}");
    }

    /// A refused node is taken out and the request is answered by the next one; the node
    /// comes back once it answers a probe. Two loopback listeners stand in for nodes:
    /// one refuses (nothing listens on its port), one answers HTTP 200.
    #[tokio::test]
    async fn a_refused_node_is_taken_out_and_probed_back() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let answering = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let answering_url = format!("http://{}", answering.local_addr().unwrap());
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let refused_url = format!("http://{closed_addr}");
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = answering.accept().await else { return };
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    while let Ok(read) = socket.read(&mut buffer).await {
                        if read == 0 {
                            return;
                        }
                        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if socket.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let interval = Duration::from_millis(50);
        let pool = NodePool::new(&[refused_url.clone(), answering_url], Duration::from_secs(5), interval).unwrap();
        let get = |client: OpenSearch| async move {
            client.send::<(), ()>(Method::Get, "/", Default::default(), None, None, None).await
        };
        // The first round starts at the refused node: answered by the other one.
        let response = pool.send("test", get).await.unwrap();
        assert_eq!(response.status_code().as_u16(), 200);
        let health = pool.health();
        assert!(health[0].out && health[0].failures == 1, "{health:?}");
        assert!(health[0].last_error.as_deref().unwrap().contains(&refused_url), "{health:?}");
        assert!(!health[1].out);
        // Later rounds skip it: no further failure is counted until a probe.
        for _ in 0..4 {
            pool.send("test", get).await.unwrap();
        }
        assert_eq!(pool.health()[0].failures, 1);
        // The node starts answering: the prober puts it back.
        let listener = tokio::net::TcpListener::bind(closed_addr).await.unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    let mut buffer = [0u8; 4096];
                    if socket.read(&mut buffer).await.unwrap_or(0) > 0 {
                        let _ = socket.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}").await;
                    }
                });
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.health()[0].out {
            assert!(Instant::now() < deadline, "the node was not probed back: {:?}", pool.health());
            tokio::time::sleep(interval).await;
        }
        assert_eq!(pool.health()[0].failures, 0);
    }
}
