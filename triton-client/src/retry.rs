//! The retry budget of one call: its deadline, the pauses it may still take, and whether
//! a request whose connection broke may still be sent again. `TritonClient` (one endpoint)
//! and `TritonPool` (several) both decide their retries with it, so the two agree.

use std::time::Duration;

use tokio::time::Instant;

use crate::client::ClientConfig;
use crate::error::ClientError;

/// Longest pause between two retries, however many retries are configured.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct RetryBudget {
    deadline: Instant,
    pauses_left: u32,
    backoff: Duration,
    /// A request that may have reached a server that then died is sent once more, not
    /// more: a request that itself crashes Triton would otherwise take down every server
    /// in turn.
    resend_left: bool,
}

impl RetryBudget {
    pub fn new(config: &ClientConfig) -> Self {
        RetryBudget {
            deadline: Instant::now() + config.call_timeout,
            pauses_left: config.max_retries,
            backoff: config.initial_backoff,
            resend_left: true,
        }
    }

    /// What is left of the call's deadline.
    pub fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// After a failed attempt: `Some(pause)` to try again after that pause, `None` to give
    /// up with this error. `elsewhere` says another endpoint is ready and not yet tried
    /// in this call: the retry goes there at once and spends no pause.
    pub fn after(&mut self, error: &ClientError, elsewhere: bool) -> Option<Duration> {
        if !error.is_retryable() {
            return None;
        }
        if matches!(error, ClientError::ConnectionLost { .. }) {
            if !self.resend_left {
                return None;
            }
            self.resend_left = false;
        }
        let now = Instant::now();
        if elsewhere {
            return (now < self.deadline).then_some(Duration::ZERO);
        }
        if self.pauses_left == 0 || now + self.backoff >= self.deadline {
            return None;
        }
        self.pauses_left -= 1;
        let pause = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        Some(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_retries: u32) -> ClientConfig {
        ClientConfig {
            call_timeout: Duration::from_secs(60),
            max_retries,
            initial_backoff: Duration::from_millis(100),
            ..ClientConfig::default()
        }
    }

    fn unavailable() -> ClientError {
        ClientError::Unavailable { endpoint: "a".into(), method: "ModelInfer", attempts: 1, message: "refused".into() }
    }

    fn lost() -> ClientError {
        ClientError::ConnectionLost { endpoint: "a".into(), method: "ModelInfer", attempts: 1, message: "reset".into() }
    }

    #[tokio::test(start_paused = true)]
    async fn pauses_double_up_to_the_configured_retries() {
        let mut budget = RetryBudget::new(&config(4));
        let pauses: Vec<_> = std::iter::from_fn(|| budget.after(&unavailable(), false)).collect();
        assert_eq!(pauses, [100, 200, 400, 800].map(Duration::from_millis));
    }

    #[tokio::test(start_paused = true)]
    async fn another_ready_endpoint_is_tried_at_once_without_spending_a_pause() {
        let mut budget = RetryBudget::new(&config(1));
        assert_eq!(budget.after(&unavailable(), true), Some(Duration::ZERO));
        assert_eq!(budget.after(&unavailable(), true), Some(Duration::ZERO));
        assert_eq!(budget.after(&unavailable(), false), Some(Duration::from_millis(100)));
        assert_eq!(budget.after(&unavailable(), false), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_connection_is_resent_once() {
        let mut budget = RetryBudget::new(&config(3));
        assert_eq!(budget.after(&lost(), true), Some(Duration::ZERO));
        assert_eq!(budget.after(&lost(), true), None);
        // A refused connection never delivered the request: still retried.
        assert_eq!(budget.after(&unavailable(), false), Some(Duration::from_millis(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_is_at_fault_so_nothing_is_retried() {
        let mut budget = RetryBudget::new(&config(3));
        let rejected =
            ClientError::Rejected { method: "ModelInfer", model: "m".into(), code: "x".into(), message: "bad".into() };
        assert_eq!(budget.after(&rejected, true), None);
        let missing = ClientError::ModelNotFound { method: "ModelInfer", model: "m".into(), message: "no".into() };
        assert_eq!(budget.after(&missing, true), None);
        let late = ClientError::DeadlineExceeded { method: "ModelInfer", timeout: Duration::from_secs(1) };
        assert_eq!(budget.after(&late, true), None);
    }

    #[tokio::test(start_paused = true)]
    async fn no_retry_starts_after_the_call_deadline() {
        let mut budget = RetryBudget::new(&ClientConfig { call_timeout: Duration::from_millis(250), ..config(10) });
        assert_eq!(budget.after(&unavailable(), false), Some(Duration::from_millis(100)));
        tokio::time::advance(Duration::from_millis(100)).await;
        // 100 + 200 ms would end past 250 ms.
        assert_eq!(budget.after(&unavailable(), false), None);
        tokio::time::advance(Duration::from_millis(150)).await;
        assert_eq!(budget.after(&unavailable(), true), None);
        assert_eq!(budget.time_left(), Duration::ZERO);
    }
}
