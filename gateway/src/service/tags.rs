//! Tag lists, of a photo and of a search filter: trimmed, blanks dropped, duplicates removed
//! (the first kept) with a set, in one pass that stops at the first tag over the limits, so a
//! flood of tags costs linear time and is refused early.

use std::collections::HashSet;

use crate::service::ServiceError;

/// The most distinct tags (`max_tags`, named by `key` in the error) and, when given, the
/// longest tag in characters (`limits.max_tag_chars`).
pub struct TagLimits {
    pub max_tags: usize,
    pub key: &'static str,
    pub max_chars: Option<usize>,
}

pub fn distinct<'a>(tags: impl IntoIterator<Item = &'a str>, limits: &TagLimits) -> Result<Vec<String>, ServiceError> {
    let mut seen = HashSet::new();
    let mut distinct = Vec::new();
    for tag in tags.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        if let Some(max_chars) = limits.max_chars.filter(|&max| tag.chars().nth(max).is_some()) {
            let start: String = tag.chars().take(20).collect();
            return Err(ServiceError::BadRequest(format!(
                "tag {start:?}... is longer than {max_chars} characters (limits.max_tag_chars)"
            )));
        }
        if seen.insert(tag) {
            if distinct.len() == limits.max_tags {
                return Err(ServiceError::BadRequest(format!(
                    "more than {} distinct tags ({})",
                    limits.max_tags, limits.key
                )));
            }
            distinct.push(tag.to_owned());
        }
    }
    Ok(distinct)
}
