//! [`FaceAligner::from_parameters`]: the alignment settings read from named text
//! parameters (`face_size`, `face_template`, `landmark_margin`, `min_landmark_spread`,
//! `min_landmark_aspect`), as the `face_align` model config holds them. The backend and
//! the gateway both read that one config, so they align faces the same way.

use crate::{CropError, FaceAligner, ARCFACE_TEMPLATE_112};

/// The names of the alignment parameters.
mod keys {
    pub const FACE_SIZE: &str = "face_size";
    pub const FACE_TEMPLATE: &str = "face_template";
    pub const LANDMARK_MARGIN: &str = "landmark_margin";
    pub const MIN_LANDMARK_SPREAD: &str = "min_landmark_spread";
    pub const MIN_LANDMARK_ASPECT: &str = "min_landmark_aspect";
}

/// An alignment parameter that is missing or cannot be used, named by its key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaceParameterError {
    #[error("parameter '{key}' is required")]
    Missing { key: &'static str },
    #[error("parameter '{key}' = {value:?} is invalid: {reason}")]
    Invalid { key: &'static str, value: String, reason: String },
}

fn invalid(key: &'static str, value: &str, reason: impl ToString) -> FaceParameterError {
    FaceParameterError::Invalid { key, value: value.to_string(), reason: reason.to_string() }
}

fn number<'v, T: std::str::FromStr>(
    lookup: &impl Fn(&'static str) -> Option<&'v str>,
    key: &'static str,
    default: &'v str,
) -> Result<T, FaceParameterError>
where
    T::Err: std::fmt::Display,
{
    let text = lookup(key).unwrap_or(default);
    text.trim().parse().map_err(|e| invalid(key, text, e))
}

/// `face_template`: 10 comma-separated numbers, x y of each of the 5 points.
fn parse_template(text: &str) -> Result<[[f32; 2]; 5], FaceParameterError> {
    let values: Vec<f32> = text
        .split(',')
        .map(|v| v.trim().parse::<f32>())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(keys::FACE_TEMPLATE, text, e))?;
    if values.len() != 10 {
        return Err(invalid(keys::FACE_TEMPLATE, text, "expected 10 numbers: x,y of 5 points"));
    }
    Ok(std::array::from_fn(|i| [values[2 * i], values[2 * i + 1]]))
}

impl FaceAligner {
    /// Reads the alignment settings through `lookup` (parameter name -> its text, `None`
    /// when absent). `face_size` is required; the others default to the ArcFace template
    /// scaled by `face_size / 112`, margin 0.1, spread 1.0 px and aspect 0.05.
    pub fn from_parameters<'v>(lookup: impl Fn(&'static str) -> Option<&'v str>) -> Result<Self, FaceParameterError> {
        let size_text = lookup(keys::FACE_SIZE).ok_or(FaceParameterError::Missing { key: keys::FACE_SIZE })?;
        let size: usize = match size_text.trim().parse() {
            Ok(0) => return Err(invalid(keys::FACE_SIZE, size_text, "must be at least 1")),
            Ok(size) => size,
            Err(e) => return Err(invalid(keys::FACE_SIZE, size_text, e)),
        };
        let template_text = lookup(keys::FACE_TEMPLATE);
        let template = match template_text {
            Some(text) => parse_template(text)?,
            // The ArcFace template is defined for 112; other sizes scale it.
            None => {
                let scale = size as f32 / 112.0;
                ARCFACE_TEMPLATE_112.map(|p| p.map(|v| v * scale))
            }
        };
        let margin = number(&lookup, keys::LANDMARK_MARGIN, "0.1")?;
        let min_spread = number(&lookup, keys::MIN_LANDMARK_SPREAD, "1.0")?;
        let min_aspect = number(&lookup, keys::MIN_LANDMARK_ASPECT, "0.05")?;
        FaceAligner::new(template, size, margin, min_spread, min_aspect).map_err(|e| match &e {
            CropError::InvalidFaceParameter { name, value } => invalid(name, &value.to_string(), &e),
            CropError::InvalidFaceTemplate(_) => match template_text {
                Some(text) => invalid(keys::FACE_TEMPLATE, text, &e),
                None => invalid(keys::FACE_TEMPLATE, &format!("{template:?}"), &e),
            },
            _ => invalid(keys::FACE_SIZE, size_text, &e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn aligner(params: &[(&str, &str)]) -> Result<FaceAligner, FaceParameterError> {
        let map: HashMap<&str, &str> = params.iter().copied().collect();
        FaceAligner::from_parameters(|key| map.get(key).copied())
    }

    #[test]
    fn defaults_are_the_arcface_settings() {
        let parsed = aligner(&[("face_size", "112")]).unwrap();
        let direct = FaceAligner::new(ARCFACE_TEMPLATE_112, 112, 0.1, 1.0, 0.05).unwrap();
        assert_eq!(parsed, direct);
    }

    #[test]
    fn every_setting_is_read() {
        let parsed = aligner(&[
            ("face_size", " 56 "),
            ("face_template", "19,25.5, 36,25, 28,35, 20,46, 35,46"),
            ("landmark_margin", "0.2"),
            ("min_landmark_spread", "2"),
            ("min_landmark_aspect", "0.1"),
        ])
        .unwrap();
        let template = [[19.0, 25.5], [36.0, 25.0], [28.0, 35.0], [20.0, 46.0], [35.0, 46.0]];
        assert_eq!(parsed, FaceAligner::new(template, 56, 0.2, 2.0, 0.1).unwrap());
        // Without a template, the ArcFace one is scaled to the face size.
        let half = aligner(&[("face_size", "56")]).unwrap();
        let scaled = ARCFACE_TEMPLATE_112.map(|p| p.map(|v| v * 0.5));
        assert_eq!(half, FaceAligner::new(scaled, 56, 0.1, 1.0, 0.05).unwrap());
    }

    #[test]
    fn bad_values_name_their_key_and_value() {
        assert_eq!(aligner(&[]).unwrap_err(), FaceParameterError::Missing { key: "face_size" });
        for (key, value) in [
            ("face_size", "0"),
            ("face_size", "-3"),
            ("face_template", "1,2,3"),
            ("face_template", "1,2,3,4,5,6,7,8,9,x"),
            ("face_template", "1,1,1,1,1,1,1,1,1,1"),
            ("landmark_margin", "-1"),
            ("min_landmark_spread", "0"),
            ("min_landmark_aspect", "x"),
            ("min_landmark_aspect", "1.5"),
        ] {
            let mut params = vec![("face_size", "112")];
            params.retain(|(k, _)| *k != key);
            params.push((key, value));
            match aligner(&params).unwrap_err() {
                FaceParameterError::Invalid { key: named, value: text, reason } => {
                    assert_eq!(named, key, "{value}: {reason}");
                    assert!(!reason.is_empty());
                    // Numbers are reported as parsed, the rest as written.
                    assert!(
                        text == value || text.parse::<f32>().ok() == value.parse::<f32>().ok(),
                        "{text} vs {value}"
                    );
                }
                other => panic!("{key}={value}: {other:?}"),
            }
        }
    }
}
