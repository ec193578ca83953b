//! `TritonPool`: several Triton servers that serve the same models, used as one.
//!
//! Each call goes to a ready endpoint with the fewest calls in flight. A call that fails
//! because its endpoint is gone (`ClientError::is_retryable`: connection refused, or
//! lost under the call) takes that endpoint out and is repeated on another ready one at
//! once, within the call's deadline; with none ready it pauses and tries the endpoint
//! that failed longest ago (`retry::RetryBudget` decides both). Any other error is the
//! request's own and is returned as it is. A background probe asks every endpoint's
//! `ServerReady` and puts it back when it says yes. With one endpoint a pool behaves as
//! a single `TritonClient` does.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::client::{ClientConfig, TritonClient};
use crate::error::ClientError;
use crate::retry::RetryBudget;
use crate::tensor::{InferRequest, InferResponse, ModelMetadata};

#[derive(Clone, Copy, Debug)]
pub struct ProbeConfig {
    /// Pause between two rounds of readiness probes.
    pub interval: Duration,
    /// Deadline of one probe (one attempt, never retried).
    pub timeout: Duration,
}

/// One endpoint's state, as `/health` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStatus {
    pub endpoint: String,
    /// Whether it takes calls: its last probe or call found it serving.
    pub ready: bool,
    /// Calls sent to it and not yet answered.
    pub in_flight: usize,
    /// Times it was taken out since the pool started.
    pub taken_out: u64,
    /// Why it was last taken out; kept after it is back.
    pub last_error: Option<String>,
}

/// Cheap to clone: clones share the endpoints and their state.
#[derive(Clone, Debug)]
pub struct TritonPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    members: Vec<Member>,
    /// The call deadline and retries; every member's client has these settings.
    config: ClientConfig,
    probe: ProbeConfig,
    /// Where the search for the least busy endpoint starts; it turns with every pick so
    /// that equally busy endpoints take turns.
    next_start: AtomicUsize,
}

#[derive(Debug)]
struct Member {
    client: TritonClient,
    in_flight: AtomicUsize,
    state: Mutex<MemberState>,
}

#[derive(Debug)]
struct MemberState {
    ready: bool,
    /// When it was last taken out; `None` if never.
    failed_at: Option<Instant>,
    taken_out: u64,
    last_error: Option<String>,
}

impl TritonPool {
    /// One client per endpoint, each with `client`'s settings and its own address (the
    /// `endpoint` of `client` is not used), and the background probe, which runs every
    /// `probe.interval` from now on and ends once every clone of the pool is dropped.
    /// Must be called inside a Tokio runtime.
    pub fn new(endpoints: &[String], client: ClientConfig, probe: ProbeConfig) -> Result<Self, ClientError> {
        let pool = Self::unprobed(endpoints, client, probe)?;
        pool.spawn_probe();
        Ok(pool)
    }

    fn unprobed(endpoints: &[String], client: ClientConfig, probe: ProbeConfig) -> Result<Self, ClientError> {
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoint);
        }
        let members = endpoints
            .iter()
            .map(|endpoint| {
                let client = TritonClient::new(ClientConfig { endpoint: endpoint.clone(), ..client.clone() })?;
                // Ready until shown otherwise, so the first call goes out at once, as a
                // single client's does.
                let state = MemberState { ready: true, failed_at: None, taken_out: 0, last_error: None };
                Ok(Member { client, in_flight: AtomicUsize::new(0), state: Mutex::new(state) })
            })
            .collect::<Result<Vec<_>, ClientError>>()?;
        Ok(TritonPool { inner: Arc::new(Inner { members, config: client, probe, next_start: AtomicUsize::new(0) }) })
    }

    fn spawn_probe(&self) {
        // Holds the pool weakly: the task must not keep it alive, and ends at the first
        // tick after the last clone is dropped.
        let pool = Arc::downgrade(&self.inner);
        let interval = self.inner.probe.interval;
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = pool.upgrade() else { return };
                TritonPool { inner }.probe().await;
            }
        });
    }

    /// Asks every endpoint's `ServerReady` now, all at once, updates which endpoints take
    /// calls, and returns their state.
    pub async fn probe(&self) -> Vec<EndpointStatus> {
        let probes: Vec<_> = (0..self.inner.members.len())
            .map(|index| {
                let inner = self.inner.clone();
                // A task each: a hung server delays no other probe, and a caller that goes
                // away cancels no call (Triton 2.51 can crash when a call is cancelled in
                // flight; gateway/src/triton.rs says more).
                tokio::spawn(async move {
                    let member = &inner.members[index];
                    let result = member.client.single_attempt(inner.probe.timeout).server_ready().await;
                    member.record_probe(result);
                })
            })
            .collect();
        for probe in probes {
            if let Err(err) = probe.await {
                if err.is_panic() {
                    std::panic::resume_unwind(err.into_panic());
                }
                // Otherwise cancelled: the runtime is shutting down.
            }
        }
        self.endpoints()
    }

    /// Every endpoint's state, in the order they were given.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.inner.members.iter().map(Member::status).collect()
    }

    pub async fn infer(&self, request: InferRequest) -> Result<InferResponse, ClientError> {
        self.call(|client| {
            let request = request.clone();
            async move { client.infer(request).await }
        })
        .await
    }

    pub async fn model_metadata(&self, model: &str) -> Result<ModelMetadata, ClientError> {
        self.call(|client| async move { client.model_metadata(model).await }).await
    }

    /// The `parameters` of a model's config (name -> `string_value`).
    pub async fn model_parameters(
        &self,
        model: &str,
    ) -> Result<std::collections::HashMap<String, String>, ClientError> {
        self.call(|client| async move { client.model_parameters(model).await }).await
    }

    pub async fn model_ready(&self, model: &str) -> Result<bool, ClientError> {
        self.call(|client| async move { client.model_ready(model).await }).await
    }

    /// Runs `attempt` with one endpoint's client (one attempt, within what is left of the
    /// call's deadline) until it succeeds or the retry budget says to give up.
    async fn call<T, F, Fut>(&self, attempt: F) -> Result<T, ClientError>
    where
        F: Fn(TritonClient) -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let members = &self.inner.members;
        let mut budget = RetryBudget::new(&self.inner.config);
        let mut tried = vec![false; members.len()];
        let mut attempts = 0;
        loop {
            attempts += 1;
            let index = self.pick(&tried);
            tried[index] = true;
            let member = &members[index];
            let result = {
                let _in_flight = InFlight::enter(&member.in_flight);
                attempt(member.client.single_attempt(budget.time_left())).await
            };
            let error = match result {
                Ok(value) => {
                    member.put_back();
                    return Ok(value);
                }
                Err(error) => error,
            };
            if error.is_retryable() {
                member.take_out(error.to_string());
            }
            let elsewhere = members.iter().zip(&tried).any(|(member, &tried)| !tried && member.is_ready());
            match budget.after(&error, elsewhere) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => {
                    let endpoints: Vec<&str> = members
                        .iter()
                        .zip(&tried)
                        .filter(|(_, &tried)| tried)
                        .map(|(member, _)| member.client.config().endpoint.as_str())
                        .collect();
                    return Err(error.after_attempts(attempts, &endpoints.join(", ")));
                }
            }
        }
    }

    fn pick(&self, tried: &[bool]) -> usize {
        let candidates: Vec<Candidate> =
            self.inner.members.iter().zip(tried).map(|(member, &tried)| member.candidate(tried)).collect();
        choose(&candidates, self.inner.next_start.fetch_add(1, Ordering::Relaxed))
    }
}

impl Member {
    fn state(&self) -> MutexGuard<'_, MemberState> {
        // The state is plain values, consistent after any panic: a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn endpoint(&self) -> &str {
        &self.client.config().endpoint
    }

    fn is_ready(&self) -> bool {
        self.state().ready
    }

    fn candidate(&self, tried: bool) -> Candidate {
        let state = self.state();
        Candidate {
            ready: state.ready,
            tried,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            failed_at: state.failed_at,
        }
    }

    fn status(&self) -> EndpointStatus {
        let state = self.state();
        EndpointStatus {
            endpoint: self.endpoint().to_owned(),
            ready: state.ready,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            taken_out: state.taken_out,
            last_error: state.last_error.clone(),
        }
    }

    fn put_back(&self) {
        let mut state = self.state();
        if !state.ready {
            state.ready = true;
            tracing::info!(endpoint = self.endpoint(), "Triton endpoint back in the pool");
        }
    }

    fn take_out(&self, reason: String) {
        let mut state = self.state();
        if state.ready {
            state.ready = false;
            state.taken_out += 1;
            tracing::warn!(endpoint = self.endpoint(), %reason, "Triton endpoint taken out of the pool");
        }
        state.failed_at = Some(Instant::now());
        state.last_error = Some(reason);
    }

    fn record_probe(&self, result: Result<bool, ClientError>) {
        match result {
            Ok(true) => self.put_back(),
            Ok(false) => self.take_out(format!("Triton at {} answers that it is not ready", self.endpoint())),
            Err(err) => self.take_out(err.to_string()),
        }
    }
}

/// Counts a call in flight on one endpoint while it lives, also when the call's future is
/// dropped half-way.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        InFlight(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the choice of an endpoint looks at.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    ready: bool,
    /// Already tried by this call.
    tried: bool,
    in_flight: usize,
    failed_at: Option<Instant>,
}

/// The endpoint the next attempt of a call goes to: of the ready endpoints this call has
/// not tried, the one with the fewest calls in flight; with none, the one whose last
/// failure is oldest (one never taken out first), since a server may just be starting.
/// Ties go to the first from `start` on (wrapping). `candidates` is never empty.
fn choose(candidates: &[Candidate], start: usize) -> usize {
    let count = candidates.len();
    let order = (0..count).map(|offset| (start + offset) % count);
    order
        .clone()
        .filter(|&i| candidates[i].ready && !candidates[i].tried)
        .min_by_key(|&i| candidates[i].in_flight)
        .or_else(|| order.min_by_key(|&i| candidates[i].failed_at))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex as StdMutex;

    use super::*;

    fn ready(in_flight: usize) -> Candidate {
        Candidate { ready: true, tried: false, in_flight, failed_at: None }
    }

    fn out(failed_at: Instant) -> Candidate {
        Candidate { ready: false, tried: false, in_flight: 0, failed_at: Some(failed_at) }
    }

    #[test]
    fn the_ready_endpoint_with_fewest_calls_in_flight_is_chosen() {
        assert_eq!(choose(&[ready(3), ready(1), ready(2)], 0), 1);
        assert_eq!(choose(&[ready(3), ready(1), ready(2)], 2), 1);
        let now = Instant::now();
        // An endpoint that is out gets nothing, however idle.
        assert_eq!(choose(&[out(now), ready(5)], 0), 1);
        // Nor does one this call already tried.
        assert_eq!(choose(&[Candidate { tried: true, ..ready(0) }, ready(4)], 0), 1);
    }

    #[test]
    fn equally_busy_endpoints_take_turns() {
        let candidates = [ready(2), ready(2), ready(2)];
        let picks: Vec<usize> = (0..6).map(|start| choose(&candidates, start)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        // Among the least busy only.
        let picks: Vec<usize> = (0..4).map(|start| choose(&[ready(0), ready(1), ready(0)], start)).collect();
        assert_eq!(picks, [0, 2, 2, 0]);
    }

    #[test]
    fn with_none_ready_the_endpoint_that_failed_longest_ago_is_tried() {
        let now = Instant::now();
        let later = now + Duration::from_secs(1);
        assert_eq!(choose(&[out(later), out(now), out(later)], 0), 1);
        // Tried and failed in this call: no longer ready, so the same rule.
        let tried = Candidate { tried: true, ..out(now) };
        assert_eq!(choose(&[out(later), tried], 0), 1);
        // One never taken out (starting up, say) comes first.
        let never = Candidate { ready: false, tried: false, in_flight: 0, failed_at: None };
        assert_eq!(choose(&[out(now), never], 0), 1);
    }

    const A: &str = "http://127.0.0.1:1";
    const B: &str = "http://127.0.0.1:2";

    /// A pool without the background probe (its endpoints listen nowhere): these tests
    /// script each attempt's outcome and say when endpoints are probed.
    fn pool(endpoints: &[&str], max_retries: u32) -> TritonPool {
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.to_string()).collect();
        let client = ClientConfig {
            max_retries,
            initial_backoff: Duration::from_millis(100),
            call_timeout: Duration::from_secs(60),
            ..ClientConfig::default()
        };
        let probe = ProbeConfig { interval: Duration::from_secs(2), timeout: Duration::from_secs(1) };
        TritonPool::unprobed(&endpoints, client, probe).unwrap()
    }

    fn unavailable(endpoint: &str) -> ClientError {
        ClientError::Unavailable {
            endpoint: endpoint.into(),
            method: "ModelInfer",
            attempts: 1,
            message: "tcp connect error: Connection refused".into(),
        }
    }

    fn lost(endpoint: &str) -> ClientError {
        ClientError::ConnectionLost {
            endpoint: endpoint.into(),
            method: "ModelInfer",
            attempts: 1,
            message: "connection reset".into(),
        }
    }

    fn rejected() -> ClientError {
        ClientError::Rejected {
            method: "ModelInfer",
            model: "visual_ingest".into(),
            code: "InvalidArgument".into(),
            message: "not a JPEG, PNG or WebP image".into(),
        }
    }

    /// Every attempt's endpoint in order; each answers with what `outcome` says for it.
    #[derive(Default)]
    struct Script {
        calls: StdMutex<Vec<String>>,
    }

    impl Script {
        async fn run(
            &self,
            pool: &TritonPool,
            outcome: impl Fn(&str) -> Result<&'static str, ClientError>,
        ) -> Result<&'static str, ClientError> {
            pool.call(|client| {
                let endpoint = client.config().endpoint.clone();
                self.calls.lock().unwrap().push(endpoint.clone());
                let result = outcome(&endpoint);
                async move { result }
            })
            .await
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    fn status(pool: &TritonPool, endpoint: &str) -> EndpointStatus {
        pool.endpoints().into_iter().find(|status| status.endpoint == endpoint).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_endpoint_is_taken_out_and_the_call_goes_to_another() {
        let pool = pool(&[A, B], 3);
        let script = Script::default();
        for _ in 0..4 {
            let answer = script.run(&pool, |endpoint| if endpoint == A { Err(unavailable(A)) } else { Ok("B") }).await;
            assert_eq!(answer.unwrap(), "B");
        }
        // A was tried once (by whichever call reached it first), then never again.
        assert_eq!(script.calls().iter().filter(|e| *e == A).count(), 1, "{:?}", script.calls());
        let a = status(&pool, A);
        assert!(!a.ready && a.taken_out == 1 && a.in_flight == 0, "{a:?}");
        assert!(a.last_error.unwrap().contains("Connection refused"));
        assert!(status(&pool, B).ready);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_whose_connection_broke_is_sent_again_once_elsewhere() {
        let pool = pool(&[A, B], 3);
        let script = Script::default();
        let answer = script.run(&pool, |endpoint| if endpoint == A { Err(lost(A)) } else { Ok("B") }).await;
        // Whichever endpoint came first, the call was answered by B.
        assert_eq!(answer.unwrap(), "B");
        assert!(!status(&pool, A).ready);

        // Both connections break: sent twice, not more, and the error says so.
        let pool = self::pool(&[A, B], 3);
        let script = Script::default();
        let err = script.run(&pool, |endpoint| Err(lost(endpoint))).await.unwrap_err();
        assert_eq!(script.calls().len(), 2, "{:?}", script.calls());
        assert!(matches!(err, ClientError::ConnectionLost { attempts: 2, .. }), "{err:?}");
        assert!(err.to_string().contains(A) && err.to_string().contains(B), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_triton_rejects_is_not_sent_elsewhere() {
        let pool = pool(&[A, B], 3);
        let script = Script::default();
        let err = script.run(&pool, |_| Err(rejected())).await.unwrap_err();
        assert!(matches!(err, ClientError::Rejected { .. }), "{err:?}");
        assert_eq!(script.calls().len(), 1);
        // Triton answered: the endpoint is fine and stays in.
        assert!(pool.endpoints().iter().all(|status| status.ready && status.taken_out == 0));

        let missing = || ClientError::ModelNotFound { method: "ModelInfer", model: "m".into(), message: "no".into() };
        let script = Script::default();
        assert!(matches!(script.run(&pool, |_| Err(missing())).await, Err(ClientError::ModelNotFound { .. })));
        assert_eq!(script.calls().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn one_endpoint_waits_with_backoff_as_a_single_client_does() {
        let pool = pool(&[A], 3);
        let script = Script::default();
        let started = Instant::now();
        let err = script.run(&pool, |_| Err(unavailable(A))).await.unwrap_err();
        // The gateway may start before Triton: 3 retries after 100 + 200 + 400 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(700));
        assert_eq!(script.calls(), [A; 4]);
        assert_eq!(
            err.to_string(),
            format!(
                "Triton at {A} unavailable for ModelInfer after 4 attempt(s): tcp connect error: Connection refused"
            )
        );

        // Out, but still tried when it is the only one: it answers now.
        let answer = script.run(&pool, |_| Ok("up")).await;
        assert_eq!(answer.unwrap(), "up");
        assert!(status(&pool, A).ready, "a success puts the endpoint back");
    }

    #[tokio::test(start_paused = true)]
    async fn with_every_endpoint_down_the_one_that_failed_longest_ago_is_retried() {
        let pool = pool(&[A, B], 2);
        let script = Script::default();
        let err = script.run(&pool, |endpoint| Err(unavailable(endpoint))).await.unwrap_err();
        // The second endpoint at once, then one per pause, alternating.
        let calls = script.calls();
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert!(calls.windows(2).all(|pair| pair[0] != pair[1]), "{calls:?}");
        assert!(matches!(err, ClientError::Unavailable { attempts: 4, .. }), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_go_to_the_endpoint_with_fewest_in_flight() {
        let pool = pool(&[A, B], 0);
        let (release, held) = tokio::sync::watch::channel(false);
        // Two calls held in flight: one on each endpoint, whatever the rotation.
        let hold = |pool: TritonPool, held: tokio::sync::watch::Receiver<bool>| async move {
            pool.call(|client| {
                let mut held = held.clone();
                async move {
                    held.wait_for(|released| *released).await.ok();
                    Ok::<_, ClientError>(client.config().endpoint.clone())
                }
            })
            .await
            .unwrap()
        };
        let first = tokio::spawn(hold(pool.clone(), held.clone()));
        tokio::task::yield_now().await;
        let second = tokio::spawn(hold(pool.clone(), held.clone()));
        tokio::task::yield_now().await;
        let in_flight: Vec<usize> = pool.endpoints().iter().map(|status| status.in_flight).collect();
        assert_eq!(in_flight, [1, 1]);
        // A third held on A: the next call must go to B, the least busy.
        let third = tokio::spawn({
            let pool = pool.clone();
            async move {
                pool.call(|client| {
                    let mut held = held.clone();
                    async move {
                        if client.config().endpoint == A {
                            held.wait_for(|released| *released).await.ok();
                        }
                        Ok::<_, ClientError>(())
                    }
                })
                .await
            }
        });
        tokio::task::yield_now().await;
        let script = Script::default();
        let least_busy = if status(&pool, A).in_flight == 2 { B } else { A };
        script.run(&pool, |_| Ok("")).await.unwrap();
        assert_eq!(script.calls(), [least_busy]);
        release.send(true).unwrap();
        let mut answered = vec![first.await.unwrap(), second.await.unwrap()];
        answered.sort();
        assert_eq!(answered, [A, B]);
        third.await.unwrap().unwrap();
        assert!(pool.endpoints().iter().all(|status| status.in_flight == 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_puts_a_ready_endpoint_back_and_takes_others_out() {
        let pool = pool(&[A, B], 0);
        let [a, b] = &pool.inner.members[..] else { panic!("two members") };
        a.record_probe(Err(unavailable(A)));
        b.record_probe(Ok(false));
        let states: HashMap<String, EndpointStatus> =
            pool.endpoints().into_iter().map(|status| (status.endpoint.clone(), status)).collect();
        assert!(!states[A].ready && !states[B].ready);
        assert!(states[B].last_error.as_deref().unwrap().contains("not ready"), "{:?}", states[B]);
        a.record_probe(Ok(true));
        let a_status = status(&pool, A);
        assert!(a_status.ready && a_status.taken_out == 1, "{a_status:?}");
        // Back in: the next call goes to A, the only ready endpoint.
        let script = Script::default();
        script.run(&pool, |_| Ok("")).await.unwrap();
        assert_eq!(script.calls(), [A]);
    }
}
