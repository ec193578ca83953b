//! The meeting point between a thread that waits for an in-process inference and Triton's
//! callback threads: the response (once, or several times for a model that streams), the
//! "final response" flag and the "request released" flag, behind one mutex and condition
//! variable. Waiting may give up at a deadline; the callbacks never block. Pure (std only), so
//! its unit tests run without a server; [`crate::infer`] wires it to the C callbacks.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

struct State<T> {
    response: Option<T>,
    response_done: bool,
    released: bool,
}

/// What a waiter got: the last response (if any) once both the final response arrived and the
/// request was released, or nothing because the deadline came first.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    Done(Option<T>),
    DeadlinePassed,
}

pub struct Completion<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

impl<T> Default for Completion<T> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State { response: None, response_done: false, released: false }),
            changed: Condvar::new(),
        }
    }
}

impl<T> Completion<T> {
    /// A response arrived (`None`: a flags-only call); `last` when Triton marked it final.
    /// A later response replaces an earlier one (a non-decoupled model sends one).
    pub fn respond(&self, response: Option<T>, last: bool) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if response.is_some() {
            state.response = response;
        }
        state.response_done |= last;
        drop(state);
        self.changed.notify_all();
    }

    /// Triton released the request: it reads none of its inputs any more.
    pub fn release(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).released = true;
        self.changed.notify_all();
    }

    /// Blocks until the final response arrived and the request was released, or until
    /// `deadline` (never, when `None`) has passed.
    pub fn wait_until(&self, deadline: Option<Instant>) -> Outcome<T> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while !(state.response_done && state.released) {
            state = match deadline {
                None => self.changed.wait(state).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Outcome::DeadlinePassed;
                    }
                    self.changed.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0
                }
            };
        }
        Outcome::Done(state.response.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    #[test]
    fn done_needs_both_the_final_response_and_the_release() {
        let completion = Arc::new(Completion::default());
        let callbacks = completion.clone();
        let worker = thread::spawn(move || {
            callbacks.respond(Some(7), false);
            thread::sleep(Duration::from_millis(20));
            callbacks.respond(None, true);
            thread::sleep(Duration::from_millis(20));
            callbacks.release();
        });
        let started = Instant::now();
        assert_eq!(completion.wait_until(None), Outcome::Done(Some(7)));
        assert!(started.elapsed() >= Duration::from_millis(40), "returned before the release");
        worker.join().unwrap();
    }

    #[test]
    fn a_later_response_replaces_an_earlier_one() {
        let completion = Completion::default();
        completion.respond(Some(1), false);
        completion.respond(Some(2), true);
        completion.release();
        assert_eq!(completion.wait_until(Some(Instant::now())), Outcome::Done(Some(2)));
    }

    #[test]
    fn gives_up_at_the_deadline_and_can_wait_again() {
        let completion = Completion::<u8>::default();
        completion.respond(None, true);
        let started = Instant::now();
        let outcome = completion.wait_until(Some(started + Duration::from_millis(50)));
        assert_eq!(outcome, Outcome::DeadlinePassed);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(50) && waited < Duration::from_secs(2), "waited {waited:?}");
        completion.release();
        assert_eq!(completion.wait_until(Some(Instant::now())), Outcome::Done(None));
    }

    #[test]
    fn a_past_deadline_still_reports_what_is_complete() {
        let completion = Completion::default();
        completion.respond(Some("late"), true);
        completion.release();
        assert_eq!(completion.wait_until(Some(Instant::now() - Duration::from_secs(1))), Outcome::Done(Some("late")));
    }
}
