//! [`Letterbox`]: the transform between original-image pixels and the YOLO
//! letterbox input (uniform scale, then padding), used to map detector boxes
//! back onto the original image before cropping.

use crate::CropError;

/// `letterbox = original * scale + pad`, per axis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    pub scale: f32,
    pub pad_x: f32,
    pub pad_y: f32,
}

impl Letterbox {
    /// A transform as received from the preprocess stage: `scale` must be
    /// finite and positive, the pads finite.
    pub fn new(scale: f32, pad_x: f32, pad_y: f32) -> Result<Self, CropError> {
        if !(scale.is_finite() && scale > 0.0 && pad_x.is_finite() && pad_y.is_finite()) {
            return Err(CropError::InvalidLetterbox { scale, pad_x, pad_y });
        }
        Ok(Self { scale, pad_x, pad_y })
    }

    /// The ultralytics letterbox of a `width x height` image into a
    /// `target x target` square: `r = min(t/w, t/h)`, resized to
    /// `(round(w*r), round(h*r))` and centred, so the pads may be halves.
    ///
    /// Computed in f64 with Python's round-half-to-even so that the result is
    /// the one the Python preprocessing produces. A zero side or target is
    /// treated as 1, so the result is always a valid transform.
    pub fn fit(width: u32, height: u32, target: u32) -> Self {
        let (w, h, t) = (f64::from(width.max(1)), f64::from(height.max(1)), f64::from(target.max(1)));
        let r = (t / w).min(t / h);
        let new_w = (w * r).round_ties_even();
        let new_h = (h * r).round_ties_even();
        Self { scale: r as f32, pad_x: ((t - new_w) / 2.0) as f32, pad_y: ((t - new_h) / 2.0) as f32 }
    }

    /// Maps a box `[x1, y1, x2, y2]` from letterbox to original pixels.
    pub fn to_original(&self, b: [f32; 4]) -> [f32; 4] {
        [
            (b[0] - self.pad_x) / self.scale,
            (b[1] - self.pad_y) / self.scale,
            (b[2] - self.pad_x) / self.scale,
            (b[3] - self.pad_y) / self.scale,
        ]
    }

    /// Maps a box `[x1, y1, x2, y2]` from original to letterbox pixels.
    pub fn to_letterbox(&self, b: [f32; 4]) -> [f32; 4] {
        [
            b[0] * self.scale + self.pad_x,
            b[1] * self.scale + self.pad_y,
            b[2] * self.scale + self.pad_x,
            b[3] * self.scale + self.pad_y,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_validates() {
        assert!(Letterbox::new(0.5, 0.0, 80.0).is_ok());
        for (s, px, py) in [
            (0.0, 0.0, 0.0),
            (-1.0, 0.0, 0.0),
            (f32::NAN, 0.0, 0.0),
            (f32::INFINITY, 0.0, 0.0),
            (1.0, f32::NAN, 0.0),
            (1.0, 0.0, f32::NEG_INFINITY),
        ] {
            assert!(matches!(Letterbox::new(s, px, py), Err(CropError::InvalidLetterbox { .. })), "{s} {px} {py}");
        }
    }

    #[test]
    fn fit_matches_ultralytics() {
        assert_eq!(Letterbox::fit(640, 480, 640), Letterbox::new(1.0, 0.0, 80.0).unwrap());
        assert_eq!(Letterbox::fit(1000, 500, 640), Letterbox::new(0.64, 0.0, 160.0).unwrap());
        assert_eq!(Letterbox::fit(480, 640, 640), Letterbox::new(1.0, 80.0, 0.0).unwrap());
        // Upscaling a small image, and an odd leftover giving a half-pixel pad:
        // r = 640/320 = 2, 2*101 = 202 -> pad (640-202)/2 = 219.
        assert_eq!(Letterbox::fit(320, 101, 640), Letterbox::new(2.0, 0.0, 219.0).unwrap());
        // r = 640/1920, 1079*r = 359.67 -> 360, pad 140.
        let lb = Letterbox::fit(1920, 1079, 640);
        assert_eq!((lb.pad_x, lb.pad_y), (0.0, 140.0));
        // 3x1 into 4: r = 4/3, new = (4, round(1.333) = 1), pad (0, 1.5).
        assert_eq!(Letterbox::fit(3, 1, 4).pad_y, 1.5);
        // Python rounds halves to even: 8x5 into 4 gives r = 0.5 and
        // 5*0.5 = 2.5 -> 2, so pad_y = 1 (rounding away from zero gives 0.5).
        assert_eq!(Letterbox::fit(8, 5, 4), Letterbox::new(0.5, 0.0, 1.0).unwrap());
        let degenerate = Letterbox::fit(0, 0, 0);
        assert!(Letterbox::new(degenerate.scale, degenerate.pad_x, degenerate.pad_y).is_ok());
    }

    #[test]
    fn round_trips() {
        let b = [12.5, 40.0, 300.25, 199.0];
        for lb in [
            Letterbox::fit(640, 480, 640),
            Letterbox::fit(1000, 500, 640),
            Letterbox::fit(1920, 1079, 640),
            Letterbox::new(0.3, 7.5, -2.0).unwrap(),
        ] {
            let there = lb.to_letterbox(b);
            let back = lb.to_original(there);
            for i in 0..4 {
                assert!((back[i] - b[i]).abs() <= 1e-3, "{lb:?}: {back:?} vs {b:?}");
            }
            let back = lb.to_letterbox(lb.to_original(b));
            for i in 0..4 {
                assert!((back[i] - b[i]).abs() <= 1e-3, "{lb:?}: {back:?} vs {b:?}");
            }
        }
        // The map itself, not only its round trip.
        let lb = Letterbox::fit(1000, 500, 640);
        assert_eq!(lb.to_original([0.0, 160.0, 640.0, 480.0]), [0.0, 0.0, 1000.0, 500.0]);
    }
}
