//! Size and offset rules of the three branches, written to give exactly the integers the
//! Python references produce (Ultralytics `LetterBox`, torchvision `Resize` + `CenterCrop`),
//! so these are unit-tested against hand-worked numbers rather than against images.
//!
//! Python's `round` rounds halves to even; [`f64::round_ties_even`] is used wherever the
//! reference calls it.

/// Where the letterbox puts the resized photo inside the `target x target` square.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LetterboxGeometry {
    /// `r = min(target / h, target / w)` (upscaling included, as Ultralytics' default).
    pub ratio: f64,
    pub resized_width: u32,
    pub resized_height: u32,
    /// Columns of padding left of the photo: `round(dw - 0.1)`.
    pub left: u32,
    /// Rows of padding above the photo: `round(dh - 0.1)`.
    pub top: u32,
}

impl LetterboxGeometry {
    /// Ultralytics' `LetterBox(new_shape=(target, target), auto=False, scaleup=True,
    /// center=True)`: resize to `(round(w*r), round(h*r))`, pad `dw = (target - new_w) / 2`
    /// on the left as `round(dw - 0.1)` (so an odd leftover puts the extra column on the
    /// right). A side that would round to 0 (aspect ratios beyond `target : 0.5`) is kept at
    /// 1 pixel, where the reference would fail.
    pub fn fit(width: u32, height: u32, target: u32) -> Self {
        let (w, h, t) = (f64::from(width.max(1)), f64::from(height.max(1)), f64::from(target));
        let ratio = (t / h).min(t / w);
        let resized_width = ((w * ratio).round_ties_even() as u32).clamp(1, target);
        let resized_height = ((h * ratio).round_ties_even() as u32).clamp(1, target);
        let pad = |resized: u32| ((t - f64::from(resized)) / 2.0 - 0.1).round_ties_even().max(0.0) as u32;
        Self { ratio, resized_width, resized_height, left: pad(resized_width), top: pad(resized_height) }
    }
}

/// The transform `letterbox_px = original_px * scale + pad` that `box_embed` consumes, for
/// an `original` tensor of `original_width x original_height` (the photo after the cap).
///
/// `pad` is where the photo's first pixel actually sits (`left`, `top`: integers, as
/// Ultralytics' `scale_boxes` uses them). `scale` is exact along the longer side, which
/// fills the square; along the shorter side the resized size was rounded to whole pixels,
/// so the true per-axis scale differs by less than half a letterbox pixel over the whole
/// side (the same approximation as Ultralytics' single `gain`).
pub fn letterbox_transform(geometry: &LetterboxGeometry, original_width: u32, original_height: u32) -> [f32; 3] {
    let longest_resized = geometry.resized_width.max(geometry.resized_height);
    let longest_original = original_width.max(original_height).max(1);
    let scale = f64::from(longest_resized) / f64::from(longest_original);
    [scale as f32, geometry.left as f32, geometry.top as f32]
}

/// torchvision `Resize(short)` on a PIL image: the shorter side becomes `short`, the longer
/// `int(short * long / short_side)` (truncated). Returns `(width, height)`.
pub fn shorter_side_resize(width: u32, height: u32, short: u32) -> (u32, u32) {
    let (w, h) = (width.max(1), height.max(1));
    let (short_side, long_side) = if w <= h { (w, h) } else { (h, w) };
    if short_side == short {
        return (w, h);
    }
    let long = (f64::from(short) * f64::from(long_side) / f64::from(short_side)) as u32;
    let long = long.max(1);
    if w <= h {
        (short, long)
    } else {
        (long, short)
    }
}

/// torchvision `CenterCrop(crop)` offsets into a `width x height` image that is at least
/// `crop` on both sides: `(int(round((w - crop) / 2)), int(round((h - crop) / 2)))`.
pub fn center_crop_offsets(width: u32, height: u32, crop: u32) -> (u32, u32) {
    let offset = |side: u32| (f64::from(side.saturating_sub(crop)) / 2.0).round_ties_even() as u32;
    (offset(width), offset(height))
}

/// Size of the `original` output: unchanged when the longest side is at most `max_side`,
/// else the longest side becomes exactly `max_side` and the other `round(side * max_side /
/// longest)` (at least 1). Returns `(width, height)`.
pub fn capped_size(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longest = width.max(height);
    if longest <= max_side {
        return (width, height);
    }
    let scale = f64::from(max_side) / f64::from(longest);
    let shorter = |side: u32| ((f64::from(side) * scale).round_ties_even() as u32).clamp(1, max_side);
    if width >= height {
        (max_side, shorter(height))
    } else {
        (shorter(width), max_side)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_landscape_portrait_and_square() {
        // 640x480 at r = 1: no resize, 80 rows above and below.
        let g = LetterboxGeometry::fit(640, 480, 640);
        assert_eq!((g.resized_width, g.resized_height, g.left, g.top), (640, 480, 0, 80));
        let g = LetterboxGeometry::fit(480, 640, 640);
        assert_eq!((g.resized_width, g.resized_height, g.left, g.top), (480, 640, 80, 0));
        let g = LetterboxGeometry::fit(1000, 1000, 640);
        assert_eq!((g.resized_width, g.resized_height, g.left, g.top, g.ratio), (640, 640, 0, 0, 0.64));
    }

    #[test]
    fn letterbox_odd_leftover_goes_right_and_bottom() {
        // 1920x1079: r = 1/3, 1079/3 = 359.67 -> 360, dh = 140 -> top 140.
        let g = LetterboxGeometry::fit(1920, 1079, 640);
        assert_eq!((g.resized_width, g.resized_height, g.top), (640, 360, 140));
        // 500x333 -> r = 1.28, 333*1.28 = 426.24 -> 426, dh = 107 -> 107.
        let g = LetterboxGeometry::fit(500, 333, 640);
        assert_eq!((g.resized_width, g.resized_height, g.left, g.top), (640, 426, 0, 107));
        // 427x640: 427 wide at r = 1, dw = 106.5 -> left round(106.4) = 106, right 107.
        let g = LetterboxGeometry::fit(427, 640, 640);
        assert_eq!((g.resized_width, g.left), (427, 106));
    }

    #[test]
    fn letterbox_rounds_half_to_even_and_keeps_one_pixel() {
        // 8x5 into 4: r = 0.5, 2.5 -> 2 (Python), dh = 1 -> top round(0.9) = 1.
        let g = LetterboxGeometry::fit(8, 5, 4);
        assert_eq!((g.resized_width, g.resized_height, g.top), (4, 2, 1));
        // 1x1 is upscaled to the whole square.
        let g = LetterboxGeometry::fit(1, 1, 640);
        assert_eq!((g.resized_width, g.resized_height, g.left, g.top), (640, 640, 0, 0));
        // 1x8000 would be 0 wide: kept at 1 column, centred.
        let g = LetterboxGeometry::fit(1, 8000, 640);
        assert_eq!((g.resized_width, g.resized_height, g.left), (1, 640, 319));
    }

    #[test]
    fn letterbox_transform_maps_original_to_letterbox() {
        // 1280x960 photo, not capped: r = 0.5, top = 80.
        let g = LetterboxGeometry::fit(1280, 960, 640);
        assert_eq!(letterbox_transform(&g, 1280, 960), [0.5, 0.0, 80.0]);
        // 8000x6000 capped to 1920x1440: letterbox 640x480, scale from the capped tensor = 1/3.
        let g = LetterboxGeometry::fit(8000, 6000, 640);
        let [scale, pad_x, pad_y] = letterbox_transform(&g, 1920, 1440);
        assert_eq!((scale, pad_x, pad_y), ((1.0f64 / 3.0) as f32, 0.0, 80.0));
        // The far corner of the capped original lands on the far corner of the photo area.
        assert!((1920.0 * scale + pad_x - 640.0).abs() < 1e-3);
        assert!((1440.0 * scale + pad_y - 560.0).abs() < 1e-3);
    }

    #[test]
    fn shorter_side_resize_truncates_the_longer_side() {
        assert_eq!(shorter_side_resize(640, 480, 256), (341, 256)); // 341.33
        assert_eq!(shorter_side_resize(480, 640, 256), (256, 341));
        assert_eq!(shorter_side_resize(500, 375, 256), (341, 256)); // 341.33
        assert_eq!(shorter_side_resize(427, 640, 256), (256, 383)); // 383.70 -> 383
        assert_eq!(shorter_side_resize(100, 100, 256), (256, 256));
        assert_eq!(shorter_side_resize(1, 1, 256), (256, 256));
        assert_eq!(shorter_side_resize(256, 300, 256), (256, 300));
        assert_eq!(shorter_side_resize(3, 1000, 256), (256, 85333));
    }

    #[test]
    fn center_crop_offsets_round_half_to_even() {
        assert_eq!(center_crop_offsets(341, 256, 256), (42, 0)); // 42.5 -> 42
        assert_eq!(center_crop_offsets(343, 256, 256), (44, 0)); // 43.5 -> 44
        assert_eq!(center_crop_offsets(256, 383, 256), (0, 64)); // 63.5 -> 64
        assert_eq!(center_crop_offsets(256, 257, 256), (0, 0)); // 0.5 -> 0
        assert_eq!(center_crop_offsets(256, 256, 256), (0, 0));
    }

    #[test]
    fn cap_keeps_small_images_and_fixes_the_longest_side() {
        assert_eq!(capped_size(640, 480, 1920), (640, 480));
        assert_eq!(capped_size(1920, 1080, 1920), (1920, 1080));
        assert_eq!(capped_size(8000, 6000, 1920), (1920, 1440));
        assert_eq!(capped_size(6000, 8000, 1920), (1440, 1920));
        assert_eq!(capped_size(4000, 2999, 1920), (1920, 1440)); // 1439.52
        assert_eq!(capped_size(3000, 1001, 1920), (1920, 641)); // 640.64
        assert_eq!(capped_size(100000, 1, 1920), (1920, 1));
    }
}
