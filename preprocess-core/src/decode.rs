//! Encoded bytes -> RGB8 pixels in display orientation, with the limits that keep one bad
//! or hostile upload from taking the server down (byte size, pixel count checked from the
//! header before any pixel is decoded).
//!
//! Colour rules (documented in `docs/preprocess.md`): greyscale is replicated to RGB, an
//! alpha channel is dropped without compositing (the colour behind transparent pixels is
//! kept, as PIL's `convert("RGB")` does), 16-bit samples are rounded to 8 bits, CMYK/YCCK
//! JPEGs are converted to RGB by the decoder (Adobe inverted CMYK, as Photoshop and PIL
//! write it).

use crate::error::PreprocessError;
use crate::resample::Rgb8Image;
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use std::io::Cursor;

/// The limits one encoded photo must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    pub max_bytes: usize,
    pub max_pixels: u64,
}

/// Decodes a JPEG, PNG or WebP photo, applies its EXIF orientation and returns RGB8.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<Rgb8Image, PreprocessError> {
    decode_admitted(bytes, limits, |_| Ok(())).map(|(image, ())| image)
}

/// As [`decode`], but first asks `admit` with the photo's pixel count, read from the header
/// once the limits are checked and before any pixel is decoded (the same count after an EXIF
/// rotation); an error from it ends the decode. What it returns comes back with the pixels,
/// for the caller to hold while it works on them (a [`crate::budget::Reservation`]).
pub fn decode_admitted<T>(
    bytes: &[u8],
    limits: &DecodeLimits,
    admit: impl FnOnce(u64) -> Result<T, PreprocessError>,
) -> Result<(Rgb8Image, T), PreprocessError> {
    let header = open(bytes, limits)?;
    let admitted = admit(u64::from(header.width) * u64::from(header.height))?;
    let name = header.format;
    let decoded = DynamicImage::from_decoder(header.decoder).map_err(|e| classify(name, e))?;
    let rgb = orient(decoded.into_rgb8(), header.orientation);
    let (width, height) = rgb.dimensions();
    Ok((Rgb8Image::new(width, height, rgb.into_raw()), admitted))
}

/// `(width, height)` of the photo [`decode`] would return (after EXIF orientation), from its
/// header alone, with every check `decode` makes before decoding a pixel: a client can place
/// boxes in the photo's pixels without decoding it.
pub fn oriented_size(bytes: &[u8], limits: &DecodeLimits) -> Result<(u32, u32), PreprocessError> {
    let header = open(bytes, limits)?;
    let turned = matches!(
        header.orientation,
        Orientation::Rotate90 | Orientation::Rotate270 | Orientation::Rotate90FlipH | Orientation::Rotate270FlipH
    );
    Ok(if turned { (header.height, header.width) } else { (header.width, header.height) })
}

/// A photo whose header passed every check, ready to decode.
struct Header<D> {
    decoder: D,
    format: &'static str,
    /// As stored, before the orientation is applied.
    width: u32,
    height: u32,
    orientation: Orientation,
}

fn open<'a>(bytes: &'a [u8], limits: &DecodeLimits) -> Result<Header<impl ImageDecoder + 'a>, PreprocessError> {
    if bytes.is_empty() {
        return Err(PreprocessError::Empty);
    }
    if bytes.len() > limits.max_bytes {
        return Err(PreprocessError::TooManyBytes { bytes: bytes.len(), max: limits.max_bytes });
    }
    let format = match image::guess_format(bytes) {
        Ok(format @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP)) => format,
        _ => return Err(PreprocessError::UnknownFormat { head: hex_head(bytes) }),
    };
    let name = format_name(format);

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(decoder_limits(limits.max_pixels));
    let mut decoder = reader.into_decoder().map_err(|e| classify(name, e))?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 {
        return Err(PreprocessError::ZeroSize { format: name, width, height });
    }
    if pixels > limits.max_pixels {
        return Err(PreprocessError::TooManyPixels { format: name, width, height, pixels, max: limits.max_pixels });
    }
    // A broken EXIF block is not worth failing the photo for: it is shown unrotated, as
    // browsers and PIL's exif_transpose do.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    if format == ImageFormat::Jpeg {
        check_jpeg_complete(bytes)?;
    }
    Ok(Header { decoder, format: name, width, height, orientation })
}

/// Applies an EXIF orientation to RGB8 pixels.
pub fn orient(image: image::RgbImage, orientation: Orientation) -> image::RgbImage {
    if orientation == Orientation::NoTransforms {
        return image;
    }
    let mut dynamic = DynamicImage::ImageRgb8(image);
    dynamic.apply_orientation(orientation);
    dynamic.into_rgb8()
}

/// The decoder's own allocation cap: the header check above already bounds the pixels; this
/// bounds what a decoder may allocate on the way (16-bit RGBA is 8 bytes a pixel), plus
/// headroom for its working buffers.
fn decoder_limits(max_pixels: u64) -> Limits {
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).saturating_add(64 << 20));
    limits
}

/// zune-jpeg fills the missing rows of a cut-off JPEG with grey and reports success, so a
/// truncated file is recognised by its markers instead: the last Start-Of-Scan (0xFFDA) or
/// End-Of-Image (0xFFD9) marker in the file must be an End-Of-Image. Entropy-coded data
/// cannot contain either (0xFF is stuffed), an EXIF thumbnail's markers come before the main
/// scan, and data appended after the image (maker trailers, a second JPEG) ends with an EOI
/// itself. Scanning backwards usually stops within the last bytes.
fn check_jpeg_complete(bytes: &[u8]) -> Result<(), PreprocessError> {
    let last_marker = bytes.windows(2).rev().find(|pair| pair[0] == 0xFF && (pair[1] == 0xD9 || pair[1] == 0xDA));
    match last_marker {
        Some([_, 0xD9]) => Ok(()),
        Some(_) => Err(PreprocessError::Truncated {
            format: "JPEG",
            reason: "the image data ends before its End-Of-Image marker".into(),
        }),
        None => {
            Err(PreprocessError::Truncated { format: "JPEG", reason: "no image data (no Start-Of-Scan marker)".into() })
        }
    }
}

fn classify(format: &'static str, error: ImageError) -> PreprocessError {
    match &error {
        ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            PreprocessError::Truncated { format, reason: error.to_string() }
        }
        _ => PreprocessError::Decode { format, reason: error.to_string() },
    }
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        _ => "WebP",
    }
}

fn hex_head(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 3x2 image whose pixel (x, y) has R = x, G = y, so every transform is visible.
    fn tiny() -> image::RgbImage {
        image::RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 7]))
    }

    /// The EXIF definition of each orientation, written out per pixel: which stored pixel
    /// is shown at display position (x, y) of a `dw x dh` display.
    fn expected(exif: u8) -> image::RgbImage {
        let (w, h) = (3u32, 2u32);
        let (dw, dh) = if exif >= 5 { (h, w) } else { (w, h) };
        image::RgbImage::from_fn(dw, dh, |x, y| {
            let (sx, sy) = match exif {
                1 => (x, y),
                2 => (w - 1 - x, y),
                3 => (w - 1 - x, h - 1 - y),
                4 => (x, h - 1 - y),
                5 => (y, x),
                6 => (y, h - 1 - x),
                7 => (w - 1 - y, h - 1 - x),
                8 => (w - 1 - y, x),
                _ => unreachable!(),
            };
            *tiny().get_pixel(sx, sy)
        })
    }

    #[test]
    fn all_eight_exif_orientations() {
        for exif in 1..=8u8 {
            let orientation = Orientation::from_exif(exif).unwrap();
            assert_eq!(orient(tiny(), orientation), expected(exif), "EXIF orientation {exif}");
        }
    }

    fn limits() -> DecodeLimits {
        DecodeLimits { max_bytes: 1 << 20, max_pixels: 10_000 }
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut out = Vec::new();
        image::RgbImage::from_pixel(width, height, image::Rgb([1, 2, 3]))
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn rejects_empty_large_unknown_and_broken_input() {
        assert_eq!(decode(&[], &limits()), Err(PreprocessError::Empty));
        let big = vec![0u8; (1 << 20) + 1];
        assert!(matches!(decode(&big, &limits()), Err(PreprocessError::TooManyBytes { .. })));
        assert!(matches!(decode(b"hello, world", &limits()), Err(PreprocessError::UnknownFormat { .. })));
        assert!(matches!(decode(&png(101, 100), &limits()), Err(PreprocessError::TooManyPixels { pixels: 10100, .. })));
        let cut = png(50, 50);
        assert!(matches!(
            decode(&cut[..cut.len() / 2], &limits()),
            Err(PreprocessError::Truncated { .. } | PreprocessError::Decode { .. })
        ));
    }

    #[test]
    fn admission_sees_the_pixels_before_decoding_and_can_refuse() {
        let mut asked = None;
        let (image, token) = decode_admitted(&png(40, 25), &limits(), |pixels| {
            asked = Some(pixels);
            Ok("held")
        })
        .unwrap();
        assert_eq!((asked, token, image.width), (Some(1000), "held", 40));
        let refused = decode_admitted(&png(40, 25), &limits(), |_| -> Result<(), _> { Err(PreprocessError::Empty) });
        assert_eq!(refused.unwrap_err(), PreprocessError::Empty);
        // Over max_pixels (or broken) never reaches the admission.
        let never = decode_admitted(&png(101, 100), &limits(), |_| -> Result<(), _> { panic!("admitted") });
        assert!(matches!(never, Err(PreprocessError::TooManyPixels { .. })));
    }

    /// A PNG whose eXIf chunk says `exif` (big-endian TIFF, one IFD entry: Orientation).
    fn png_with_orientation(width: u32, height: u32, exif: u16) -> Vec<u8> {
        use image::ImageEncoder;
        let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
        tiff.extend_from_slice(&exif.to_be_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        let pixels = vec![9u8; (width * height * 3) as usize];
        let mut out = Vec::new();
        let mut encoder = image::codecs::png::PngEncoder::new(&mut out);
        encoder.set_exif_metadata(tiff).unwrap();
        encoder.write_image(&pixels, width, height, image::ExtendedColorType::Rgb8).unwrap();
        out
    }

    #[test]
    fn oriented_size_is_the_decoded_size_without_decoding() {
        for exif in 1..=8u16 {
            let photo = png_with_orientation(40, 25, exif);
            let decoded = decode(&photo, &limits()).unwrap();
            let size = oriented_size(&photo, &limits()).unwrap();
            assert_eq!(size, (decoded.width, decoded.height), "EXIF orientation {exif}");
            assert_eq!(size, if exif >= 5 { (25, 40) } else { (40, 25) }, "EXIF orientation {exif}");
        }
        assert!(matches!(oriented_size(&png(101, 100), &limits()), Err(PreprocessError::TooManyPixels { .. })));
        assert!(matches!(oriented_size(b"hello, world", &limits()), Err(PreprocessError::UnknownFormat { .. })));
    }

    #[test]
    fn decodes_png_to_rgb() {
        let image = decode(&png(4, 3), &limits()).unwrap();
        assert_eq!((image.width, image.height), (4, 3));
        assert!(image.pixels.chunks_exact(3).all(|p| p == [1, 2, 3]));
    }
}
