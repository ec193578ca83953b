//! [`Responder`]: the responses, per-request errors and timings of one execute call, and the
//! tail every execute ends with (send -> report statistics), written once for every backend.
//!
//! A request's error goes on its own response and the others carry on. The requests
//! themselves stay with the caller (their inputs are borrowed while the batch is computed)
//! and are released after the responder is gone: dropping it answers every request it has
//! not answered yet, so a panic in execute never leaves a client waiting.

use crate::entry::log;
use crate::model::{ExecTimes, ModelInstance};
use crate::request::Request;
use crate::response::Response;
use crate::time::now_ns;
use crate::{sys, TritonError};

/// The responses of one execute call over `requests`, answered exactly once.
pub struct Responder<'r> {
    instance: ModelInstance,
    /// Names the backend in log lines.
    backend: &'static str,
    requests: &'r [Request],
    /// `None` where creation failed (logged) or once sent.
    responses: Vec<Option<Response>>,
    errors: Vec<Option<TritonError>>,
    exec_start_ns: u64,
    compute_start_ns: u64,
    compute_end_ns: u64,
    answered: bool,
}

impl<'r> Responder<'r> {
    /// Starts the execute call's clock and creates one response per request (the first step
    /// of every execute, so that every later failure has a response to go on).
    pub fn new(instance: ModelInstance, backend: &'static str, requests: &'r [Request]) -> Self {
        let exec_start_ns = now_ns();
        // A request without a response cannot be answered, only counted as failed.
        let (responses, errors) = requests
            .iter()
            .map(|r| match Response::new(r) {
                Ok(response) => (Some(response), None),
                Err(e) => {
                    log(sys::TRITONSERVER_LOG_ERROR, &format!("{backend}: cannot create response: {e}"));
                    (None, Some(e.context("creating the response")))
                }
            })
            .unzip();
        Self {
            instance,
            backend,
            requests,
            responses,
            errors,
            exec_start_ns,
            compute_start_ns: 0,
            compute_end_ns: 0,
            answered: false,
        }
    }

    pub fn requests(&self) -> &'r [Request] {
        self.requests
    }

    /// Gives request `index` its error, unless it already has one (the first cause is the one
    /// the client needs).
    pub fn fail(&mut self, index: usize, error: TritonError) {
        self.errors[index].get_or_insert(error);
    }

    /// Every request's error so far, for code that fails ranges of requests at once.
    pub fn errors_mut(&mut self) -> &mut [Option<TritonError>] {
        &mut self.errors
    }

    /// The requests still to be answered with outputs (a response and no error): index,
    /// response to write into, and the slot for the error that writing may hit.
    pub fn pending(&mut self) -> impl Iterator<Item = (usize, &mut Response, &mut Option<TritonError>)> + '_ {
        self.responses.iter_mut().zip(self.errors.iter_mut()).enumerate().filter_map(
            |(index, (response, error))| match (response.as_mut(), &*error) {
                (Some(response), None) => Some((index, response, error)),
                _ => None,
            },
        )
    }

    pub fn start_compute(&mut self) {
        self.compute_start_ns = now_ns();
    }

    /// Ends the compute interval; only the first call counts, so a path that stops early can
    /// end it where it stopped and a later catch-all call changes nothing.
    pub fn end_compute(&mut self) {
        if self.compute_end_ns == 0 {
            self.compute_end_ns = now_ns();
        }
    }

    /// Sends every response (with its request's error, if any) and reports the statistics.
    pub fn finish(mut self) {
        self.answer(Ending::Finished);
    }

    fn answer(&mut self, ending: Ending) {
        if self.answered {
            return;
        }
        self.answered = true;
        let backend = self.backend;
        self.end_compute();
        let times = ExecTimes {
            exec_start_ns: self.exec_start_ns,
            compute_start_ns: self.compute_start_ns,
            compute_end_ns: self.compute_end_ns,
            exec_end_ns: now_ns(),
        };
        let slots = self.responses.iter_mut().zip(self.errors.iter_mut());
        for (request, (response, error)) in self.requests.iter().zip(slots) {
            let outcome = outcome(error.take(), ending);
            let success = outcome.is_ok();
            if let Some(response) = response.take() {
                if let Err(e) = response.send(outcome) {
                    log(sys::TRITONSERVER_LOG_ERROR, &format!("{backend}: sending response: {e}"));
                }
            }
            if let Err(e) = self.instance.report_request(request, success, &times) {
                log(sys::TRITONSERVER_LOG_ERROR, &format!("{backend}: reporting statistics: {e}"));
            }
        }
        if let Err(e) = self.instance.report_batch(self.requests.len() as u64, &times) {
            log(sys::TRITONSERVER_LOG_ERROR, &format!("{backend}: reporting batch statistics: {e}"));
        }
    }
}

impl Drop for Responder<'_> {
    /// Reached without [`Responder::finish`] only when execute unwinds (or forgot to finish):
    /// every request not yet answered gets an INTERNAL error instead of no answer at all.
    fn drop(&mut self) {
        if !self.answered {
            log(
                sys::TRITONSERVER_LOG_ERROR,
                &format!("{}: execute ended without answering its requests", self.backend),
            );
            self.answer(Ending::Abandoned);
        }
    }
}

/// How an execute call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Finished,
    /// Unwound (a panic) before [`Responder::finish`]: outputs may be half written.
    Abandoned,
}

/// What a request is answered with: its own error, else success, except that an abandoned
/// batch's requests without an error get INTERNAL (their outputs cannot be trusted).
fn outcome(error: Option<TritonError>, ending: Ending) -> Result<(), TritonError> {
    match (error, ending) {
        (Some(e), _) => Err(e),
        (None, Ending::Finished) => Ok(()),
        (None, Ending::Abandoned) => {
            Err(TritonError::internal("the backend failed while processing this request (see the server log)"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn an_abandoned_batch_answers_every_request() {
        assert_eq!(outcome(None, Ending::Finished), Ok(()));
        let internal = outcome(None, Ending::Abandoned).unwrap_err();
        assert_eq!(internal.code, ErrorCode::Internal);
        // A request that already failed keeps its own error either way.
        let own = TritonError::invalid_arg("input 'x' is bad");
        assert_eq!(outcome(Some(own.clone()), Ending::Abandoned), Err(own.clone()));
        assert_eq!(outcome(Some(own.clone()), Ending::Finished), Err(own));
    }
}
