//! The one decode pixel budget of the process: every `preprocess` model loaded in this server
//! (and so every instance) reserves from the same [`PixelBudget`], so the bound holds for the
//! process, not per model. The first model to load sets its size; a model asking for another
//! size while it is in use fails its load (two sizes cannot both bound one process). Once no
//! model holds it, the next load sets the size again.

use preprocess_core::PixelBudget;
use std::sync::{Arc, Mutex, Weak};

static SHARED: Mutex<Weak<PixelBudget>> = Mutex::new(Weak::new());

/// The process's budget of `total` pixels, shared with every model already holding it.
pub fn process_budget(total: u64) -> Result<Arc<PixelBudget>, String> {
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(budget) = shared.upgrade() {
        if budget.total() != total {
            return Err(format!(
                "decode_pixel_budget = {total}, but the process-wide budget already in use by another preprocess \
                 model is {}: every preprocess model of one server must use the same value",
                budget.total()
            ));
        }
        return Ok(budget);
    }
    let budget = Arc::new(PixelBudget::new(total));
    *shared = Arc::downgrade(&budget);
    Ok(budget)
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test: the budget is process state, shared by every test of this binary.
    #[test]
    fn models_share_one_budget_of_one_size() {
        let first = process_budget(1000).unwrap();
        let second = process_budget(1000).unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        let err = process_budget(2000).unwrap_err();
        assert!(err.contains("decode_pixel_budget = 2000") && err.contains("1000"), "{err}");
        drop((first, second));
        assert_eq!(process_budget(2000).unwrap().total(), 2000, "free to resize once unused");
    }
}
