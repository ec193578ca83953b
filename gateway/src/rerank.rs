//! Face rerank (POST /faces/rerank): checks a query embedding and its candidates, scores
//! each candidate, drops those under the threshold and sorts the rest, best first.
//!
//! The score is `(1 + cos) / 2` clamped to [0, 1], cos being the cosine similarity of the
//! two vectors (each L2-normalised first, so callers may send raw or normalised vectors).
//! It is the same scale as Lucene's cosine score, which lets a caller move a threshold
//! between OpenSearch and this endpoint. Sums run in f64 with one rounding to f32.
//!
//! Scoring runs natively here by default; `Scorer::Plugin` hands the same flat arrays to
//! a C-ABI library (`plugin`, which refuses any score it returns that is not finite and in
//! [0, 1]), and the ordering and threshold stay here either way.

use std::collections::HashSet;

use crate::plugin::{PluginError, PluginScorer};

/// Why a rerank request was refused (400) or the plugin failed (500: an error code, or a
/// score that is not finite and in [0, 1]; the message names the library).
#[derive(Debug, thiserror::Error)]
pub enum RerankError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Plugin(#[from] PluginError),
}

/// Limits from `faces.*` config.
#[derive(Clone, Copy, Debug)]
pub struct RerankLimits {
    pub max_candidates: usize,
    pub max_dim: usize,
}

/// A request that passed every check: the candidates' vectors flattened row-major.
#[derive(Debug, PartialEq)]
pub struct CheckedRerank {
    pub dim: usize,
    pub flat: Vec<f32>,
    pub threshold: f32,
}

/// One candidate that kept its place: its position in the request and its score.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ranked {
    pub index: usize,
    pub score: f32,
}

fn invalid(message: String) -> RerankError {
    RerankError::Invalid(message)
}

/// Checks dimensions, values, ids, list size and threshold; every problem names the
/// candidate it is about.
pub fn check(
    query: &[f32],
    candidates: &[(&str, &[f32])],
    threshold: Option<f32>,
    default_threshold: f32,
    limits: RerankLimits,
) -> Result<CheckedRerank, RerankError> {
    let dim = query.len();
    if dim == 0 {
        return Err(invalid("the query embedding is empty".into()));
    }
    if dim > limits.max_dim {
        return Err(invalid(format!("the query embedding has {dim} dimensions; the limit is {}", limits.max_dim)));
    }
    if !has_direction(query) {
        return Err(invalid("the query embedding has a NaN or infinite value, or is all zeros".into()));
    }
    if candidates.is_empty() {
        return Err(invalid("the candidate list is empty".into()));
    }
    if candidates.len() > limits.max_candidates {
        return Err(invalid(format!(
            "{} candidates; the limit is {} (faces.max_rerank_candidates)",
            candidates.len(),
            limits.max_candidates
        )));
    }
    let threshold = match threshold {
        None => default_threshold,
        Some(t) if t.is_finite() && (0.0..=1.0).contains(&t) => t,
        Some(t) => return Err(invalid(format!("threshold must be a score in [0, 1], got {t}"))),
    };
    let mut seen = HashSet::with_capacity(candidates.len());
    let mut flat = Vec::with_capacity(candidates.len() * dim);
    for (i, (id, embedding)) in candidates.iter().enumerate() {
        if id.is_empty() {
            return Err(invalid(format!("candidate {i} has an empty id")));
        }
        if !seen.insert(*id) {
            return Err(invalid(format!("candidate id {id:?} appears more than once")));
        }
        if embedding.len() != dim {
            return Err(invalid(format!(
                "candidate {id:?} has {} dimensions but the query has {dim}",
                embedding.len()
            )));
        }
        if !has_direction(embedding) {
            return Err(invalid(format!("candidate {id:?} has a NaN or infinite value, or is all zeros")));
        }
        flat.extend_from_slice(embedding);
    }
    Ok(CheckedRerank { dim, flat, threshold })
}

/// Finite and not all zero: a vector whose cosine with anything is defined.
fn has_direction(vector: &[f32]) -> bool {
    vector.iter().all(|v| v.is_finite()) && vector.iter().any(|&v| v != 0.0) && norm(vector).is_finite()
}

fn norm(vector: &[f32]) -> f64 {
    vector.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>().sqrt()
}

/// `(1 + cos) / 2` of `query` with each `dim`-long row of `flat`, into `scores`. Inputs are
/// checked (`check`): finite, non-zero, `flat.len() == scores.len() * dim`.
pub fn native_scores(query: &[f32], flat: &[f32], dim: usize, scores: &mut [f32]) {
    let query_norm = norm(query);
    for (row, score) in flat.chunks_exact(dim).zip(scores.iter_mut()) {
        let dot: f64 = query.iter().zip(row).map(|(&q, &c)| f64::from(q) * f64::from(c)).sum();
        let cosine = dot / (query_norm * norm(row));
        *score = ((1.0 + cosine) / 2.0).clamp(0.0, 1.0) as f32;
    }
}

/// Keeps scores >= `threshold`, best first; equal scores keep request order.
pub fn rank(scores: &[f32], threshold: f32) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = scores
        .iter()
        .enumerate()
        .filter(|(_, &score)| score >= threshold)
        .map(|(index, &score)| Ranked { index, score })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    ranked
}

/// Which implementation computes the scores; chosen once at start.
pub enum Scorer {
    Native,
    Plugin(PluginScorer),
}

impl Scorer {
    /// For health and metrics: `native`, or `plugin:<path>`.
    pub fn name(&self) -> String {
        match self {
            Scorer::Native => "native".into(),
            Scorer::Plugin(plugin) => format!("plugin:{}", plugin.path().display()),
        }
    }

    /// The metrics label: `native` or `plugin` (paths would grow the label set).
    pub fn kind(&self) -> &'static str {
        match self {
            Scorer::Native => "native",
            Scorer::Plugin(_) => "plugin",
        }
    }

    pub fn score(&self, query: &[f32], checked: &CheckedRerank) -> Result<Vec<f32>, RerankError> {
        let mut scores = vec![0.0; checked.flat.len() / checked.dim];
        match self {
            Scorer::Native => native_scores(query, &checked.flat, checked.dim, &mut scores),
            Scorer::Plugin(plugin) => plugin.score(query, &checked.flat, checked.dim, &mut scores)?,
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: RerankLimits = RerankLimits { max_candidates: 3, max_dim: 4 };

    fn message(result: Result<CheckedRerank, RerankError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn scores_are_half_one_plus_cosine_of_normalised_vectors() {
        let query = [3.0, 0.0];
        let flat = [2.0, 0.0, -1.0, 0.0, 0.0, 7.0, 1.0, 1.0];
        let mut scores = [0.0; 4];
        native_scores(&query, &flat, 2, &mut scores);
        assert_eq!(&scores[..3], &[1.0, 0.0, 0.5]);
        assert!((scores[3] - (1.0 + 0.5f32.sqrt()) / 2.0).abs() < 1e-7, "{scores:?}");
    }

    #[test]
    fn rank_sorts_filters_and_keeps_ties_in_request_order() {
        let ranked = rank(&[0.2, 0.9, 0.5, 0.9, 0.49], 0.5);
        let order: Vec<usize> = ranked.iter().map(|r| r.index).collect();
        assert_eq!(order, vec![1, 3, 2]);
        assert_eq!(ranked[2].score, 0.5, "a score equal to the threshold stays");
    }

    #[test]
    fn check_flattens_and_takes_the_default_threshold() {
        let (a, b) = ([1.0, 2.0], [3.0, 4.0]);
        let checked = check(&[1.0, 0.0], &[("a", &a), ("b", &b)], None, 0.7, LIMITS).unwrap();
        assert_eq!(checked, CheckedRerank { dim: 2, flat: vec![1.0, 2.0, 3.0, 4.0], threshold: 0.7 });
        assert_eq!(check(&[1.0, 0.0], &[("a", &a)], Some(0.0), 0.7, LIMITS).unwrap().threshold, 0.0);
    }

    #[test]
    fn bad_requests_name_the_problem() {
        let ok = [1.0, 0.0];
        let short = [1.0];
        let nan = [f32::NAN, 1.0];
        let zero = [0.0, 0.0];
        // (query, candidates, threshold, expected message)
        type Case<'a> = (&'a [f32], Vec<(&'a str, &'a [f32])>, Option<f32>, &'a str);
        let cases: [Case; 10] = [
            (&[], vec![("a", &ok)], None, "query embedding is empty"),
            (&[1.0; 5], vec![("a", &ok)], None, "limit is 4"),
            (&nan, vec![("a", &ok)], None, "query embedding has a NaN"),
            (&zero, vec![("a", &ok)], None, "all zeros"),
            (&ok, vec![], None, "candidate list is empty"),
            (&ok, vec![("a", &ok), ("b", &ok), ("c", &ok), ("d", &ok)], None, "4 candidates; the limit is 3"),
            (&ok, vec![("a", &ok), ("b", &short)], None, "candidate \"b\" has 1 dimensions but the query has 2"),
            (&ok, vec![("a", &nan)], None, "candidate \"a\" has a NaN"),
            (&ok, vec![("a", &ok), ("a", &ok)], None, "\"a\" appears more than once"),
            (&ok, vec![("a", &ok)], Some(1.5), "threshold must be a score in [0, 1]"),
        ];
        for (query, candidates, threshold, needle) in cases {
            let text = message(check(query, &candidates, threshold, 0.5, LIMITS));
            assert!(text.contains(needle), "{text:?} should contain {needle:?}");
        }
        assert!(message(check(&ok, &[("", &ok)], None, 0.5, LIMITS)).contains("empty id"));
        assert!(message(check(&ok, &[("a", &ok)], Some(f32::NAN), 0.5, LIMITS)).contains("threshold"));
    }

    #[test]
    fn native_scorer_runs_through_the_enum() {
        let candidate = [0.0, 2.0];
        let checked = check(&[1.0, 0.0], &[("a", &candidate)], None, 0.0, LIMITS).unwrap();
        assert_eq!(Scorer::Native.score(&[1.0, 0.0], &checked).unwrap(), vec![0.5]);
        assert_eq!(Scorer::Native.name(), "native");
    }
}
