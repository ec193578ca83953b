//! Which object of an image hit matched the query: the rule both stores implement (the
//! embedded store with [`best_object`], OpenSearch with a scripted nested inner hit), held
//! equal by the contract suite.

use crate::validate::cosine;
use crate::{MatchedObject, ObjectRecord, ObjectSummary, SearchFilter};

/// Whether an object may be an image hit's matched object: of one of the filter's classes
/// (any when none) with confidence >= `min_confidence`.
fn allowed(object: &ObjectRecord, filter: &SearchFilter) -> bool {
    (filter.classes.is_empty() || filter.classes.contains(&object.class_name))
        && object.confidence >= filter.min_confidence
}

/// The allowed object with the highest cosine to `query`; ties go to the lower index.
pub fn best_object(objects: &[ObjectRecord], query: &[f32], filter: &SearchFilter) -> Option<MatchedObject> {
    let mut best: Option<MatchedObject> = None;
    for (object_index, object) in objects.iter().enumerate().filter(|(_, o)| allowed(o, filter)) {
        let score = cosine(&object.embedding, query);
        if best.is_none_or(|b| score > b.score) {
            best = Some(MatchedObject { object_index, score });
        }
    }
    best
}

/// An object as a hit carries it: without its vector.
pub fn summary(object: &ObjectRecord) -> ObjectSummary {
    ObjectSummary {
        class_id: object.class_id,
        class_name: object.class_name.clone(),
        confidence: object.confidence,
        bbox: object.bbox,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(class: &str, confidence: f32, embedding: Vec<f32>) -> ObjectRecord {
        ObjectRecord { class_id: 0, class_name: class.into(), confidence, bbox: [0.0; 4], embedding }
    }

    #[test]
    fn best_object_respects_the_filter() {
        let objects = [object("dog", 0.9, vec![0.0, 1.0]), object("person", 0.4, vec![1.0, 0.0])];
        let query = [1.0, 0.0];
        assert_eq!(best_object(&objects, &query, &SearchFilter::default()).unwrap().object_index, 1);
        let strict = SearchFilter { min_confidence: 0.5, ..SearchFilter::default() };
        assert_eq!(best_object(&objects, &query, &strict).unwrap(), MatchedObject { object_index: 0, score: 0.0 });
        let cats = SearchFilter { classes: vec!["cat".into()], ..SearchFilter::default() };
        assert!(best_object(&objects, &query, &cats).is_none());
    }

    #[test]
    fn ties_go_to_the_first_object() {
        let objects = [object("dog", 0.9, vec![1.0, 0.0]), object("dog", 0.9, vec![1.0, 0.0])];
        assert_eq!(best_object(&objects, &[1.0, 0.0], &SearchFilter::default()).unwrap().object_index, 0);
    }
}
