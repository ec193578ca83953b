//! A process-wide budget of pixels being decoded at once (`limits.decode_pixel_budget`):
//! a decode reserves its photo's width x height, read from the header, before any pixel
//! is allocated, and returns it when done. Many maximum-size uploads at once then wait
//! their turn (up to `limits.decode_wait_ms`, then 503) instead of together exhausting
//! memory.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::service::ServiceError;

pub struct PixelBudget {
    permits: Arc<Semaphore>,
    total: u32,
    wait: Duration,
}

/// The reservation of one decode; dropping it returns the pixels.
pub struct PixelReservation {
    _permit: OwnedSemaphorePermit,
}

impl PixelBudget {
    /// `total` is capped at `u32::MAX` pixels, the most one reservation can name.
    pub fn new(total: u64, wait: Duration) -> PixelBudget {
        let total = u32::try_from(total).unwrap_or(u32::MAX);
        PixelBudget { permits: Arc::new(Semaphore::new(total as usize)), total, wait }
    }

    /// Waits for room for `pixels`; a photo larger than the whole budget is refused at once.
    pub async fn reserve(&self, pixels: u64) -> Result<PixelReservation, ServiceError> {
        let wanted = match u32::try_from(pixels) {
            Ok(wanted) if wanted <= self.total => wanted.max(1),
            _ => {
                return Err(ServiceError::PayloadTooLarge(format!(
                    "a photo of {pixels} pixels is larger than the decode budget of {} (limits.decode_pixel_budget)",
                    self.total
                )))
            }
        };
        match tokio::time::timeout(self.wait, self.permits.clone().acquire_many_owned(wanted)).await {
            Ok(Ok(permit)) => Ok(PixelReservation { _permit: permit }),
            Ok(Err(_)) => Err(ServiceError::Internal("the pixel budget was closed".into())),
            Err(_) => Err(ServiceError::Unavailable(format!(
                "overloaded: other photos are being decoded; no room for {pixels} pixels within {} ms \
                 (limits.decode_pixel_budget, limits.decode_wait_ms); retry shortly",
                self.wait.as_millis()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn decodes_wait_for_room_then_give_up() {
        let budget = PixelBudget::new(10_000_000, Duration::from_millis(100));
        let first = budget.reserve(6_000_000).await.unwrap();
        let err = budget.reserve(6_000_000).await.err().expect("no room while the first decode runs");
        assert_eq!(err.status(), http::StatusCode::SERVICE_UNAVAILABLE, "{err}");
        assert!(err.to_string().contains("limits.decode_pixel_budget"), "{err}");
        let small = budget.reserve(4_000_000).await.unwrap();
        drop(first);
        drop(small);
        budget.reserve(10_000_000).await.unwrap();
    }

    #[tokio::test]
    async fn a_photo_over_the_whole_budget_is_refused_at_once() {
        let budget = PixelBudget::new(1_000_000, Duration::from_secs(60));
        let started = std::time::Instant::now();
        let err = budget.reserve(1_000_001).await.err().expect("too large");
        assert_eq!(err.status(), http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
