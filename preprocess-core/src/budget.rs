//! [`PixelBudget`]: how many decoded pixels may exist at once, shared by every decode that
//! holds the same budget. A decode reserves its photo's width x height (read from the header,
//! before any pixel is decoded) and gives it back when its [`Reservation`] drops; a reservation
//! that does not fit waits, up to a deadline, for others to end. So the memory of concurrent
//! decodes is bounded by the budget (times the bytes one pixel costs), whatever the number of
//! threads or model instances. Pure: std only.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BudgetError {
    /// Could never fit: rejected at once.
    #[error("the image is {pixels} pixels, more than the whole decode_pixel_budget = {budget}")]
    LargerThanBudget { pixels: u64, budget: u64 },
    /// Did not fit within the wait: the server is overloaded with large decodes.
    #[error(
        "overloaded: {pixels} pixels did not fit in decode_pixel_budget = {budget} within {} ms \
         (other photos were being decoded); retry later",
        waited.as_millis()
    )]
    Overloaded { pixels: u64, budget: u64, waited: Duration },
}

#[derive(Debug)]
pub struct PixelBudget {
    total: u64,
    in_use: Mutex<u64>,
    freed: Condvar,
}

/// Pixels held from a [`PixelBudget`]; given back on drop.
#[derive(Debug)]
pub struct Reservation<'b> {
    budget: &'b PixelBudget,
    pixels: u64,
}

impl PixelBudget {
    pub fn new(total: u64) -> Self {
        Self { total, in_use: Mutex::new(0), freed: Condvar::new() }
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Pixels reserved right now.
    pub fn in_use(&self) -> u64 {
        *self.in_use.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `pixels`, waiting at most `wait` for them to fit. Waiters are woken whenever
    /// pixels are given back; a small photo may pass a large one that is still waiting.
    pub fn reserve(&self, pixels: u64, wait: Duration) -> Result<Reservation<'_>, BudgetError> {
        if pixels > self.total {
            return Err(BudgetError::LargerThanBudget { pixels, budget: self.total });
        }
        let deadline = Instant::now() + wait;
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        while *in_use + pixels > self.total {
            let now = Instant::now();
            if now >= deadline {
                return Err(BudgetError::Overloaded { pixels, budget: self.total, waited: wait });
            }
            in_use = self.freed.wait_timeout(in_use, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
        *in_use += pixels;
        Ok(Reservation { budget: self, pixels })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        *self.budget.in_use.lock().unwrap_or_else(|p| p.into_inner()) -= self.pixels;
        self.budget.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn reservations_add_up_and_are_given_back() {
        let budget = PixelBudget::new(100);
        let a = budget.reserve(60, Duration::ZERO).unwrap();
        let b = budget.reserve(40, Duration::ZERO).unwrap();
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 40);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn larger_than_the_budget_fails_at_once() {
        let budget = PixelBudget::new(100);
        let started = Instant::now();
        let err = budget.reserve(101, Duration::from_secs(10)).unwrap_err();
        assert_eq!(err, BudgetError::LargerThanBudget { pixels: 101, budget: 100 });
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(err.to_string().contains("decode_pixel_budget = 100"), "{err}");
    }

    #[test]
    fn a_full_budget_fails_after_the_wait_saying_overloaded() {
        let budget = PixelBudget::new(100);
        let _held = budget.reserve(80, Duration::ZERO).unwrap();
        let started = Instant::now();
        let err = budget.reserve(30, Duration::from_millis(50)).unwrap_err();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(50) && waited < Duration::from_secs(2), "{waited:?}");
        assert!(matches!(err, BudgetError::Overloaded { pixels: 30, budget: 100, .. }));
        assert!(err.to_string().starts_with("overloaded:"), "{err}");
        assert_eq!(budget.in_use(), 80, "a failed reservation holds nothing");
    }

    #[test]
    fn a_waiter_gets_the_pixels_when_they_are_given_back() {
        let budget = Arc::new(PixelBudget::new(100));
        let held = budget.reserve(70, Duration::ZERO).unwrap();
        let waiter = {
            let budget = budget.clone();
            thread::spawn(move || budget.reserve(50, Duration::from_secs(10)).map(|r| r.pixels))
        };
        thread::sleep(Duration::from_millis(30));
        drop(held);
        assert_eq!(waiter.join().unwrap(), Ok(50));
        assert_eq!(budget.in_use(), 0);
    }

    #[test]
    fn concurrent_holders_never_exceed_the_budget() {
        let budget = Arc::new(PixelBudget::new(10));
        let peak = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let (budget, peak) = (budget.clone(), peak.clone());
                thread::spawn(move || {
                    for _ in 0..50 {
                        let r = budget.reserve(1 + i % 4, Duration::from_secs(10)).unwrap();
                        let now = budget.in_use();
                        let mut p = peak.lock().unwrap();
                        *p = (*p).max(now);
                        drop(p);
                        drop(r);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert!(*peak.lock().unwrap() <= 10);
        assert_eq!(budget.in_use(), 0);
    }
}
