//! Vectors of stored records that the graphs do not hold yet. An open that finds the saved
//! graphs behind the records (a kill -9 since the last checkpoint) returns before it has
//! inserted the missing vectors: a background thread inserts them, and until it has,
//! searches score these exactly and merge them with what the graphs find.

use std::collections::BTreeMap;

use super::Kind;
use crate::validate::cosine;

#[derive(Default)]
pub struct Pending {
    /// Per graph (in `Kind` order): key -> f32 vector. Ordered, so that the catch-up inserts
    /// in key order (the order the records were put in): the same records give the same
    /// graph on every open, as a hash map's per-process order would not.
    vectors: [BTreeMap<u64, Vec<f32>>; 3],
}

impl Pending {
    pub fn insert(&mut self, kind: Kind, key: u64, vector: Vec<f32>) {
        self.vectors[kind as usize].insert(key, vector);
    }

    pub fn remove(&mut self, kind: Kind, key: u64) {
        self.vectors[kind as usize].remove(&key);
    }

    pub fn contains(&self, kind: Kind, key: u64) -> bool {
        self.vectors[kind as usize].contains_key(&key)
    }

    /// Vectors still to insert, all graphs together.
    pub fn len(&self) -> usize {
        self.vectors.iter().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.iter().all(BTreeMap::is_empty)
    }

    /// The first `per_graph` pending (key, vector) pairs of each graph by key, in `Kind` order.
    pub fn batch(&self, per_graph: usize) -> [Vec<(u64, &[f32])>; 3] {
        self.vectors.each_ref().map(|vectors| vectors.iter().take(per_graph).map(|(k, v)| (*k, &v[..])).collect())
    }

    /// (key, cosine with `query`) of the pending vectors of `kind` that pass `keep`.
    pub fn scored(&self, kind: Kind, query: &[f32], keep: &dyn Fn(u64) -> bool) -> Vec<(u64, f32)> {
        self.vectors[kind as usize]
            .iter()
            .filter(|(key, _)| keep(**key))
            .map(|(key, vector)| (*key, cosine(query, vector)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_only_the_kind_asked_and_what_passes() {
        let mut pending = Pending::default();
        pending.insert(Kind::Object, 8, vec![0.0, 1.0]);
        pending.insert(Kind::Object, 7, vec![1.0, 0.0]);
        pending.insert(Kind::Face, 9, vec![1.0, 0.0]);
        assert_eq!(pending.len(), 3);
        assert!(pending.contains(Kind::Object, 7) && !pending.contains(Kind::Image, 7));
        let [images, objects, faces] = pending.batch(1);
        // The smallest key first, whatever the order of insertion.
        assert_eq!((images.len(), objects, faces), (0, vec![(7, &[1.0, 0.0][..])], vec![(9, &[1.0, 0.0][..])]));
        let mut scored = pending.scored(Kind::Object, &[2.0, 0.0], &|_| true);
        scored.sort_by_key(|(key, _)| *key);
        assert_eq!(scored, vec![(7, 1.0), (8, 0.0)]);
        assert_eq!(pending.scored(Kind::Object, &[1.0, 0.0], &|key| key != 7), vec![(8, 0.0)]);
        assert!(pending.scored(Kind::Image, &[1.0, 0.0], &|_| true).is_empty());
        pending.remove(Kind::Object, 7);
        pending.remove(Kind::Object, 8);
        pending.remove(Kind::Face, 9);
        assert!(pending.is_empty());
    }
}
