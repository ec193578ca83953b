//! Box validation and crop policies: [`plan_crop`] turns one detector box into
//! the [`CropRegion`] that ROI-align samples, or a [`BoxRejection`].

use crate::{CropError, Letterbox};

/// How a box becomes the region that is resampled to the square crop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CropPolicy {
    /// The box itself, resampled to a square (aspect not kept).
    Stretch,
    /// A square around the box; everything outside the box is zero.
    Pad,
    /// A square `scale` times the longer side, with the surroundings.
    Context { scale: f32 },
}

impl CropPolicy {
    /// Parses a config value: `"stretch"`, `"pad"` or `"context"`.
    /// `context_scale` is only used, and only checked (finite, >= 1), for
    /// `"context"`, so an unused config value cannot fail a model load.
    pub fn parse(name: &str, context_scale: f32) -> Result<Self, CropError> {
        match name {
            "stretch" => Ok(Self::Stretch),
            "pad" => Ok(Self::Pad),
            "context" if context_scale.is_finite() && context_scale >= 1.0 => {
                Ok(Self::Context { scale: context_scale })
            }
            "context" => Err(CropError::InvalidContextScale(context_scale)),
            other => Err(CropError::UnknownPolicy(other.to_owned())),
        }
    }
}

/// What ROI-align samples, in original-image pixels `[x1, y1, x2, y2]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropRegion {
    /// The region resampled to the crop.
    pub roi: [f32; 4],
    /// Samples outside this box contribute zero (pad policy only).
    pub mask: Option<[f32; 4]>,
}

/// Why a box gets no crop; its output row is marked invalid, not dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BoxRejection {
    #[error("box has a non-finite coordinate (before or after mapping to the original image)")]
    NonFinite,
    #[error("box is inverted, outside the image, or narrower than min_box_size after clamping")]
    Degenerate,
}

/// Maps a letterbox box to the `width x height` original image, clamps it,
/// rejects degenerate boxes and applies `policy`.
///
/// A box is degenerate when a clamped side is below `min_box_size` or not
/// positive; the second condition keeps empty, inverted and fully-outside
/// boxes rejected even with `min_box_size <= 0`.
pub fn plan_crop(
    box_lb: [f32; 4],
    letterbox: &Letterbox,
    width: usize,
    height: usize,
    policy: CropPolicy,
    min_box_size: f32,
) -> Result<CropRegion, BoxRejection> {
    let mapped = letterbox.to_original(box_lb);
    if box_lb.iter().chain(&mapped).any(|v| !v.is_finite()) {
        return Err(BoxRejection::NonFinite);
    }
    let (w_img, h_img) = (width as f32, height as f32);
    let clamped = [
        mapped[0].clamp(0.0, w_img),
        mapped[1].clamp(0.0, h_img),
        mapped[2].clamp(0.0, w_img),
        mapped[3].clamp(0.0, h_img),
    ];
    let (w, h) = (clamped[2] - clamped[0], clamped[3] - clamped[1]);
    let too_small = |side: f32| side <= 0.0 || side < min_box_size;
    if too_small(w) || too_small(h) {
        return Err(BoxRejection::Degenerate);
    }
    let square = |side: f32| {
        let (cx, cy) = ((clamped[0] + clamped[2]) * 0.5, (clamped[1] + clamped[3]) * 0.5);
        let half = side * 0.5;
        [cx - half, cy - half, cx + half, cy + half]
    };
    Ok(match policy {
        CropPolicy::Stretch => CropRegion { roi: clamped, mask: None },
        CropPolicy::Pad => CropRegion { roi: square(w.max(h)), mask: Some(clamped) },
        CropPolicy::Context { scale } => CropRegion { roi: square(w.max(h) * scale), mask: None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDENTITY: Letterbox = Letterbox { scale: 1.0, pad_x: 0.0, pad_y: 0.0 };

    fn plan(b: [f32; 4], policy: CropPolicy) -> Result<CropRegion, BoxRejection> {
        plan_crop(b, &IDENTITY, 100, 50, policy, 1.0)
    }

    #[test]
    fn parse_policies() {
        assert_eq!(CropPolicy::parse("stretch", 0.0), Ok(CropPolicy::Stretch));
        assert_eq!(CropPolicy::parse("pad", f32::NAN), Ok(CropPolicy::Pad));
        assert_eq!(CropPolicy::parse("context", 1.25), Ok(CropPolicy::Context { scale: 1.25 }));
        assert_eq!(CropPolicy::parse("context", 1.0), Ok(CropPolicy::Context { scale: 1.0 }));
        for bad in [0.99, f32::NAN, f32::INFINITY, -2.0] {
            assert!(matches!(CropPolicy::parse("context", bad), Err(CropError::InvalidContextScale(_))));
        }
        for bad in ["", "Stretch", "crop", "pad "] {
            assert_eq!(CropPolicy::parse(bad, 1.25), Err(CropError::UnknownPolicy(bad.to_owned())));
        }
    }

    #[test]
    fn non_finite_is_rejected() {
        for b in [
            [f32::NAN, 0.0, 10.0, 10.0],
            [0.0, f32::INFINITY, 10.0, 10.0],
            [0.0, 0.0, f32::NEG_INFINITY, 10.0],
            [0.0, 0.0, 10.0, f32::NAN],
            // Finite in, overflowing out of the mapping.
            [0.0, 0.0, f32::MAX, 10.0],
        ] {
            let lb = Letterbox::new(0.5, 0.0, 0.0).unwrap();
            assert_eq!(plan_crop(b, &lb, 100, 50, CropPolicy::Stretch, 1.0), Err(BoxRejection::NonFinite), "{b:?}");
        }
    }

    #[test]
    fn degenerate_is_rejected() {
        for b in [
            [10.0, 10.0, 10.0, 20.0],   // zero width
            [10.0, 10.0, 20.0, 10.0],   // zero height
            [20.0, 10.0, 10.0, 20.0],   // inverted
            [10.0, 30.0, 20.0, 20.0],   // inverted
            [10.0, 10.0, 10.5, 20.0],   // below min_box_size
            [-30.0, 10.0, -5.0, 20.0],  // left of the image
            [120.0, 10.0, 150.0, 20.0], // right of the image
            [10.0, 50.0, 20.0, 90.0],   // below the image
            [10.0, 49.5, 20.0, 90.0],   // clamped to half a pixel
        ] {
            assert_eq!(plan(b, CropPolicy::Stretch), Err(BoxRejection::Degenerate), "{b:?}");
        }
        // Empty boxes stay rejected without a minimum size.
        let zero = plan_crop([10.0, 10.0, 10.0, 20.0], &IDENTITY, 100, 50, CropPolicy::Pad, 0.0);
        assert_eq!(zero, Err(BoxRejection::Degenerate));
        // Exactly min_box_size is accepted.
        assert!(plan([10.0, 10.0, 11.0, 11.0], CropPolicy::Stretch).is_ok());
    }

    #[test]
    fn rejections_display() {
        assert!(BoxRejection::NonFinite.to_string().contains("non-finite"));
        assert!(BoxRejection::Degenerate.to_string().contains("min_box_size"));
    }

    #[test]
    fn stretch_maps_and_clamps() {
        let lb = Letterbox::fit(1000, 500, 640);
        // Letterbox (64, 192, 320, 288) -> original (100, 50, 500, 200).
        let r = plan_crop([64.0, 192.0, 320.0, 288.0], &lb, 1000, 500, CropPolicy::Stretch, 1.0);
        assert_eq!(r, Ok(CropRegion { roi: [100.0, 50.0, 500.0, 200.0], mask: None }));
        let r = plan([-20.0, -5.0, 130.0, 60.0], CropPolicy::Stretch).unwrap();
        assert_eq!(r.roi, [0.0, 0.0, 100.0, 50.0]);
        let r = plan([90.0, 40.0, 101.0, 51.0], CropPolicy::Stretch).unwrap();
        assert_eq!(r.roi, [90.0, 40.0, 100.0, 50.0]);
    }

    #[test]
    fn pad_is_square_centred_and_masked() {
        let r = plan([10.0, 20.0, 50.0, 30.0], CropPolicy::Pad).unwrap();
        assert_eq!(r.roi, [10.0, 5.0, 50.0, 45.0]);
        assert_eq!(r.mask, Some([10.0, 20.0, 50.0, 30.0]));
        // The mask is the clamped box; the square may leave the image.
        let r = plan([-10.0, 40.0, 30.0, 60.0], CropPolicy::Pad).unwrap();
        assert_eq!(r.mask, Some([0.0, 40.0, 30.0, 50.0]));
        assert_eq!(r.roi, [0.0, 30.0, 30.0, 60.0]);
        let [x1, y1, x2, y2] = r.roi;
        assert_eq!(x2 - x1, y2 - y1);
    }

    #[test]
    fn context_side_is_scaled_longer_side() {
        let r = plan([10.0, 20.0, 50.0, 30.0], CropPolicy::Context { scale: 1.5 }).unwrap();
        assert_eq!(r.roi, [0.0, -5.0, 60.0, 55.0]);
        assert_eq!(r.mask, None);
        let r = plan([40.0, 0.0, 60.0, 50.0], CropPolicy::Context { scale: 2.0 }).unwrap();
        assert_eq!(r.roi, [0.0, -25.0, 100.0, 75.0]);
    }
}
