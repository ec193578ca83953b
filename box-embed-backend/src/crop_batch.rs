//! The crops of one execute call laid out as one batch: every valid row of every request,
//! request after request, and the runs that map the batch's embeddings back to each
//! request's output rows without shifting them. Pure; both modes and every path use it.

use std::ops::Range;

/// The crops of one execute call: the valid rows of every planned request, request after
/// request, so each request's crops (and embeddings) are contiguous. `T` is what one crop
/// needs: a [`crop_core::CropRegion`] in box mode, a warp map in face mode.
#[derive(Debug)]
pub struct CropBatch<T = crop_core::CropRegion> {
    /// `(request index, what to crop)` of every crop, in crop order.
    pub crops: Vec<(usize, T)>,
    /// Index of each request's first crop.
    first_crop: Vec<usize>,
}

impl<T: Copy> CropBatch<T> {
    /// From each request's rows (`None` for a request that failed): the `Ok` rows are crops.
    pub fn new<'p, E: 'p>(requests: impl IntoIterator<Item = Option<&'p [Result<T, E>]>>) -> Self
    where
        T: 'p,
    {
        let mut crops = Vec::new();
        let mut first_crop = Vec::new();
        for (request, rows) in requests.into_iter().enumerate() {
            first_crop.push(crops.len());
            for row in rows.into_iter().flatten().flatten() {
                crops.push((request, *row));
            }
        }
        Self { crops, first_crop }
    }

    pub fn len(&self) -> usize {
        self.crops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.crops.is_empty()
    }

    /// Gives `error` to every request owning a crop in `crops` that has no error yet.
    pub fn fail<Err: Clone>(&self, crops: Range<usize>, error: &Err, errors: &mut [Option<Err>]) {
        for &(request, _) in &self.crops[crops] {
            errors[request].get_or_insert_with(|| error.clone());
        }
    }

    /// Runs of consecutive valid output rows of `request` (whose rows are `rows`): each run
    /// is `len` rows starting at output row `row`, filled from consecutive crops starting at
    /// `crop`. Rows outside every run are skipped (zero, marked invalid), and never shift the
    /// rows after them.
    pub fn row_runs<E>(&self, request: usize, rows: &[Result<T, E>]) -> Vec<RowRun> {
        let mut runs: Vec<RowRun> = Vec::new();
        let mut crop = self.first_crop[request];
        for (row, region) in rows.iter().enumerate() {
            if region.is_err() {
                continue;
            }
            match runs.last_mut() {
                Some(run) if run.row + run.len == row => run.len += 1,
                _ => runs.push(RowRun { row, crop, len: 1 }),
            }
            crop += 1;
        }
        runs
    }
}

/// See [`CropBatch::row_runs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowRun {
    pub row: usize,
    pub crop: usize,
    pub len: usize,
}

/// Fills a host `[rows, D]` FP32 buffer: run rows from `embeddings`, skipped rows zero.
pub fn write_embedding_rows<T: Copy, E>(
    out: &mut [u8],
    batch: &CropBatch<T>,
    request: usize,
    rows: &[Result<T, E>],
    embeddings: &[f32],
    dim: usize,
) {
    out.fill(0);
    for run in batch.row_runs(request, rows) {
        let src = &embeddings[run.crop * dim..(run.crop + run.len) * dim];
        let dst = &mut out[run.row * dim * 4..(run.row + run.len) * dim * 4];
        for (d, s) in dst.chunks_exact_mut(4).zip(src) {
            d.copy_from_slice(&s.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::box_plan::BoxPlan;
    use crop_core::{BoxRejection, CropRegion};

    #[test]
    fn batch_runs_skip_rows_without_shifting() {
        let ok = |x: f32| Ok(CropRegion { roi: [x, 0.0, x + 1.0, 1.0], mask: None });
        let plans = [
            Some(BoxPlan {
                width: 4,
                height: 4,
                rows: vec![ok(0.0), Err(BoxRejection::Degenerate), ok(1.0), ok(2.0)],
                boxes: vec![],
            }),
            None,
            Some(BoxPlan { width: 4, height: 4, rows: vec![Err(BoxRejection::NonFinite), ok(3.0)], boxes: vec![] }),
        ];
        let batch = CropBatch::new(plans.iter().map(|p| p.as_ref().map(|p| p.rows.as_slice())));
        assert_eq!(batch.len(), 4);
        assert_eq!(batch.crops.iter().map(|c| c.0).collect::<Vec<_>>(), [0, 0, 0, 2]);
        let runs = batch.row_runs(0, &plans[0].as_ref().unwrap().rows);
        assert_eq!(runs, [RowRun { row: 0, crop: 0, len: 1 }, RowRun { row: 2, crop: 1, len: 2 }]);
        assert_eq!(batch.row_runs(2, &plans[2].as_ref().unwrap().rows), [RowRun { row: 1, crop: 3, len: 1 }]);

        let mut errors = vec![None, None, Some("earlier")];
        batch.fail(2..4, &"encoder", &mut errors);
        assert_eq!(errors, [Some("encoder"), None, Some("earlier")]);
    }
}
