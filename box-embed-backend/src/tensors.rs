//! Reading a request's raw input tensors: shapes with the batch dimension, byte sizes checked
//! against shapes (without overflow), little-endian values, the `original` image's size and
//! row counts. Pure (shapes and byte slices in), shared by [`crate::box_plan`] and
//! [`crate::face_plan`].

/// A request-level problem; the whole request fails with this message (INVALID_ARG).
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct PlanError(pub String);

/// One input tensor as received: its shape (with the batch dimension) and its bytes.
#[derive(Debug, Clone, Copy)]
pub struct RawTensor<'a> {
    pub shape: &'a [i64],
    pub bytes: &'a [u8],
}

/// The image input: its shape and size only, since its pixels may be in device memory.
#[derive(Debug, Clone, Copy)]
pub struct ImageTensor<'a> {
    pub shape: &'a [i64],
    pub byte_size: u64,
}

/// Drops the leading batch dimension of 1 that every request of a batching model carries.
pub fn per_request_shape<'s>(name: &str, shape: &'s [i64], rank: usize) -> Result<&'s [i64], PlanError> {
    match shape {
        [1, rest @ ..] if rest.len() == rank => Ok(rest),
        _ => Err(PlanError(format!("input '{name}' has shape {shape:?}; expected a batch of 1 and {rank} more dims"))),
    }
}

pub fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
}

/// Checks that `tensor` holds exactly its shape's bytes at `elem_size` bytes per element.
/// Negative dims count as 0; a shape whose byte count overflows fails the request naming it,
/// since the client chose the shape.
pub fn expect_shape_bytes(name: &str, tensor: RawTensor<'_>, elem_size: usize) -> Result<(), PlanError> {
    let len = tensor.shape.iter().try_fold(elem_size, |acc, &d| acc.checked_mul(d.max(0) as usize));
    let len =
        len.ok_or_else(|| PlanError(format!("input '{name}' has shape {:?}, too large to hold", tensor.shape)))?;
    if tensor.bytes.len() != len {
        return Err(PlanError(format!("input '{name}' holds {} bytes, its shape needs {len}", tensor.bytes.len())));
    }
    Ok(())
}

/// Width and height of the `original` image input, checked against its byte size.
pub fn image_size(original: &ImageTensor<'_>) -> Result<(usize, usize), PlanError> {
    let image_shape = per_request_shape("original", original.shape, 3)?;
    let (height, width, channels) = (image_shape[0], image_shape[1], image_shape[2]);
    if channels != 3 || height <= 0 || width <= 0 {
        return Err(PlanError(format!("input 'original' must be a non-empty [H, W, 3] image, got {image_shape:?}")));
    }
    let (height, width) = (height as usize, width as usize);
    let image_bytes = width.checked_mul(height).and_then(|n| n.checked_mul(3));
    if image_bytes.map(|n| n as u64) != Some(original.byte_size) {
        return Err(PlanError(format!(
            "input 'original' holds {} bytes, a {width}x{height} RGB image needs {}",
            original.byte_size,
            image_bytes.map_or("more than fits in memory".to_string(), |n| n.to_string())
        )));
    }
    Ok((width, height))
}

/// A row count input (`num_dets`, `num_faces`): one INT32, at least 0, at most `max`
/// (named `max_name` in the message).
pub fn row_count(name: &str, count: RawTensor<'_>, max: usize, max_name: &str) -> Result<usize, PlanError> {
    per_request_shape(name, count.shape, 1)?;
    expect_shape_bytes(name, count, 4)?;
    let value = match count.bytes {
        [a, b, c, d] => i32::from_le_bytes([*a, *b, *c, *d]),
        _ => return Err(PlanError(format!("input '{name}' must hold exactly one INT32"))),
    };
    if value < 0 {
        return Err(PlanError(format!("{name} is {value}; it cannot be negative")));
    }
    let value = value as usize;
    if value > max {
        return Err(PlanError(format!("{name} is {value}, more than {max_name} ({max})")));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overflowing_shape_names_itself() {
        let shape = [1, i64::MAX, 4];
        let err = expect_shape_bytes("det_boxes", RawTensor { shape: &shape, bytes: &[] }, 4).unwrap_err();
        assert!(err.0.contains("det_boxes") && err.0.contains(&format!("{shape:?}")), "{err}");
        let ok = RawTensor { shape: &[1, 2, 4], bytes: &[0; 32] };
        assert_eq!(expect_shape_bytes("det_boxes", ok, 4), Ok(()));
        let negative = RawTensor { shape: &[1, -3, 4], bytes: &[] };
        assert_eq!(expect_shape_bytes("det_boxes", negative, 4), Ok(()));
    }
}
