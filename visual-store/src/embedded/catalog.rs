//! Everything about the stored images except their vectors, in memory: what filters test
//! against, and the cheap indexes (class -> images, tag -> images, created_at order) that
//! tell how selective a filter is and enumerate its candidates without touching vectors.
//! Rebuilt from redb on open; changed only after the durable commit.

use std::collections::BTreeSet;
use std::sync::Arc;

use rayon::prelude::*;

// foldhash instead of SipHash: the keys are the store's own slots and interned ids, not
// chosen by a client, and open hashes some ten million of them at a million images.
use foldhash::{HashMap, HashSet};

use crate::{ImageRecord, SearchFilter};

/// The part of a stored object a filter or a hit needs.
pub struct ObjectEntry {
    pub class: u32,
    pub confidence: f32,
    pub bbox: [f32; 4],
}

pub struct ImageEntry {
    pub id: Arc<str>,
    /// Index of the image's first vector in the vector file (objects' and faces' follow).
    pub first_vector: u64,
    pub width: u32,
    pub height: u32,
    created_at: i64,
    tags: Box<[u32]>,
    pub objects: Box<[ObjectEntry]>,
    pub face_boxes: Box<[[f32; 4]]>,
}

/// Interned strings: filters compare numbers, not strings.
#[derive(Default)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        self.ids.insert(name.to_owned(), id);
        self.names.push(name.to_owned());
        id
    }
}

/// Images looked at to measure a filter's selectivity.
const SELECTIVITY_SAMPLE: usize = 2048;

#[derive(Default)]
pub struct Catalog {
    images: HashMap<u64, ImageEntry>,
    class_names: Names,
    tag_names: Names,
    /// Images with at least one object of the class (any confidence).
    by_class: HashMap<u32, HashSet<u64>>,
    by_tag: HashMap<u32, HashSet<u64>>,
    by_time: BTreeSet<(i64, u64)>,
}

/// A `SearchFilter` with names turned into interned ids.
pub struct ResolvedFilter {
    /// `Some` when the object condition is active; an empty set means any class.
    /// Sorted, once each: a test per object is a binary search, cheaper than hashing.
    object_classes: Option<Vec<u32>>,
    min_confidence: f32,
    created: (i64, i64),
    tags: Vec<u32>,
}

impl ResolvedFilter {
    pub fn is_empty(&self) -> bool {
        self.object_classes.is_none() && self.tags.is_empty() && self.created == (i64::MIN, i64::MAX)
    }

    /// Whether `image` meets the filter's conditions on the image: tags, dates and, unless
    /// the scope tests the object condition on each object, one allowed object.
    pub fn image_matches(&self, image: &ImageEntry, scope: Scope) -> bool {
        (self.created.0..=self.created.1).contains(&image.created_at)
            && self.tags.iter().all(|t| image.tags.contains(t))
            && (scope == Scope::ImageOfObject
                || self.object_classes.is_none()
                || image.objects.iter().any(|o| self.object_matches(o)))
    }

    pub fn object_matches(&self, object: &ObjectEntry) -> bool {
        match &self.object_classes {
            None => true,
            Some(classes) => {
                (classes.is_empty() || classes.binary_search(&object.class).is_ok())
                    && object.confidence >= self.min_confidence
            }
        }
    }
}

/// What the cheap indexes say about a filter.
pub enum Candidates<'a> {
    /// At most the planner's limit of images may match; these are exactly the matching ones.
    Few(Vec<(u64, &'a ImageEntry)>),
    /// Too many to scan; about this fraction of the searched vectors matches (images, or
    /// objects for object search), measured on a sample.
    Many { fraction: f32 },
}

/// Which conditions an image must meet: object search tests the object condition on the
/// object itself instead.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Image,
    ImageOfObject,
}

impl Catalog {
    /// Every stored image by slot, in no particular order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &ImageEntry)> {
        self.images.iter().map(|(slot, image)| (*slot, image))
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn image(&self, slot: u64) -> Option<&ImageEntry> {
        self.images.get(&slot)
    }

    pub fn class_name(&self, class: u32) -> &str {
        &self.class_names.names[class as usize]
    }

    /// Makes room for `additional` more images at once (open knows how many are stored).
    pub fn reserve(&mut self, additional: usize) {
        self.images.reserve(additional);
    }

    pub fn insert(&mut self, slot: u64, first_vector: u64, record: &ImageRecord) {
        let id: Arc<str> = Arc::from(record.id.as_str());
        let objects: Box<[ObjectEntry]> = record
            .objects
            .iter()
            .map(|o| ObjectEntry {
                class: self.class_names.intern(&o.class_name),
                confidence: o.confidence,
                bbox: o.bbox,
            })
            .collect();
        let tags: Box<[u32]> = record.tags.iter().map(|t| self.tag_names.intern(t)).collect();
        for object in objects.iter() {
            self.by_class.entry(object.class).or_default().insert(slot);
        }
        for tag in tags.iter() {
            self.by_tag.entry(*tag).or_default().insert(slot);
        }
        self.by_time.insert((record.created_at, slot));
        let face_boxes = record.faces.iter().map(|f| f.bbox).collect();
        self.images.insert(
            slot,
            ImageEntry {
                id,
                first_vector,
                width: record.width,
                height: record.height,
                created_at: record.created_at,
                tags,
                objects,
                face_boxes,
            },
        );
    }

    pub fn remove(&mut self, slot: u64) -> Option<ImageEntry> {
        let entry = self.images.remove(&slot)?;
        for object in entry.objects.iter() {
            if let Some(set) = self.by_class.get_mut(&object.class) {
                set.remove(&slot);
            }
        }
        for tag in entry.tags.iter() {
            if let Some(set) = self.by_tag.get_mut(tag) {
                set.remove(&slot);
            }
        }
        self.by_time.remove(&(entry.created_at, slot));
        Some(entry)
    }

    /// `None` when no image can match (a class or tag that no stored image has).
    pub fn resolve(&self, filter: &SearchFilter) -> Option<ResolvedFilter> {
        let object_classes = if filter.classes.is_empty() && filter.min_confidence <= 0.0 {
            None
        } else {
            let mut known: Vec<u32> =
                filter.classes.iter().filter_map(|c| self.class_names.ids.get(c).copied()).collect();
            if known.is_empty() && !filter.classes.is_empty() {
                return None;
            }
            known.sort_unstable();
            known.dedup();
            Some(known)
        };
        let mut tags = Vec::with_capacity(filter.tags.len());
        for tag in &filter.tags {
            tags.push(*self.tag_names.ids.get(tag)?);
        }
        let created = (filter.created_from.unwrap_or(i64::MIN), filter.created_to.unwrap_or(i64::MAX));
        Some(ResolvedFilter { object_classes, min_confidence: filter.min_confidence, created, tags })
    }

    pub fn image_matches(&self, filter: &ResolvedFilter, slot: u64, scope: Scope) -> bool {
        self.images.get(&slot).is_some_and(|image| filter.image_matches(image, scope))
    }

    /// Every image that matches, with its entry, for when the graph search gave way or came
    /// back short: the images of the filter's most selective cheap index, checked one by
    /// one, or a pass over the whole catalog when no condition has an index (at a million
    /// images the pass alone takes tens of milliseconds). In slot order, which is about the
    /// order the graphs stored the vectors in: a scan then reads them nearly in sequence.
    pub fn all_matching(&self, filter: &ResolvedFilter, scope: Scope) -> Vec<(u64, &ImageEntry)> {
        // On every core: the narrowest index of a broad filter can list half the images.
        let slots = self.narrowest(filter, usize::MAX).unwrap_or_else(|| {
            let mut all: Vec<u64> = self.images.keys().copied().collect();
            all.par_sort_unstable();
            all
        });
        slots.into_par_iter().filter_map(|slot| self.matching_entry(filter, slot, scope)).collect()
    }

    fn matching_entry(&self, filter: &ResolvedFilter, slot: u64, scope: Scope) -> Option<(u64, &ImageEntry)> {
        self.images.get(&slot).filter(|image| filter.image_matches(image, scope)).map(|image| (slot, image))
    }

    /// The images of the filter's most selective cheap index (classes, each tag, the date
    /// range), if one lists at most `limit`: sorted, once each, not yet checked against the
    /// other conditions. For object search too, since an object of class c lives in an image
    /// listed under c.
    fn narrowest(&self, filter: &ResolvedFilter, limit: usize) -> Option<Vec<u64>> {
        enum Index<'a> {
            Classes(&'a [u32]),
            Tag(&'a HashSet<u64>),
        }
        // The sizes of the class and tag sets are known without listing them (a union of
        // classes counts an image with two of them twice: an upper bound).
        let mut best: Option<(usize, Index)> = None;
        if let Some(classes) = filter.object_classes.as_ref().filter(|c| !c.is_empty()) {
            let size = classes.iter().map(|c| self.by_class.get(c).map_or(0, HashSet::len)).sum();
            best = Some((size, Index::Classes(classes)));
        }
        for tag in &filter.tags {
            let set = &self.by_tag[tag];
            if best.as_ref().is_none_or(|(size, _)| set.len() < *size) {
                best = Some((set.len(), Index::Tag(set)));
            }
        }
        let bound = best.as_ref().map_or(limit, |(size, _)| (*size).min(limit));
        if filter.created != (i64::MIN, i64::MAX) {
            // Listed only up to the best size so far: a wide range is never collected.
            let mut range: Vec<u64> = self
                .by_time
                .range((filter.created.0, 0)..=(filter.created.1, u64::MAX))
                .take(bound.saturating_add(1))
                .map(|(_, slot)| *slot)
                .collect();
            if range.len() <= bound {
                range.sort_unstable();
                return Some(range);
            }
        }
        let (size, index) = best.filter(|(size, _)| *size <= limit)?;
        let mut slots: Vec<u64> = match index {
            Index::Classes(classes) => {
                let mut slots = Vec::with_capacity(size);
                slots.extend(classes.iter().flat_map(|c| self.by_class.get(c).into_iter().flatten().copied()));
                slots
            }
            Index::Tag(set) => set.iter().copied().collect(),
        };
        slots.sort_unstable();
        slots.dedup();
        Some(slots)
    }

    /// The share of vectors that pass `filter`, measured on up to `SELECTIVITY_SAMPLE`
    /// images (the map's order is its hash order, unrelated to the filter): for object
    /// search the share of objects, for the others of images. The cheap indexes alone
    /// overstate it (an image with a dog is not a dog object over 0.9 confidence), and an
    /// overstated share means too few graph candidates to find `k` matches. Never below
    /// half of one sampled item, so that a filter that matched none of the sample still
    /// widens the search as far as the cap allows.
    fn sampled_fraction(&self, filter: &ResolvedFilter, scope: Scope) -> f32 {
        let (mut seen, mut passed) = (0usize, 0usize);
        for image in self.images.values().take(SELECTIVITY_SAMPLE) {
            let image_passes = filter.image_matches(image, scope);
            match scope {
                Scope::Image => {
                    seen += 1;
                    passed += usize::from(image_passes);
                }
                Scope::ImageOfObject => {
                    seen += image.objects.len();
                    if image_passes {
                        passed += image.objects.iter().filter(|o| filter.object_matches(o)).count();
                    }
                }
            }
        }
        let seen = seen.max(1) as f32;
        (passed as f32 / seen).max(0.5 / seen)
    }

    /// Uses the most selective cheap index to decide between an exact scan over at most
    /// `limit` images and a filtered ANN search.
    pub fn candidates(&self, filter: &ResolvedFilter, scope: Scope, limit: usize) -> Candidates<'_> {
        if self.images.len() <= limit {
            return Candidates::Few(self.all_matching(filter, scope));
        }
        match self.narrowest(filter, limit) {
            Some(slots) => {
                Candidates::Few(slots.into_iter().filter_map(|slot| self.matching_entry(filter, slot, scope)).collect())
            }
            None => Candidates::Many { fraction: self.sampled_fraction(filter, scope) },
        }
    }
}
