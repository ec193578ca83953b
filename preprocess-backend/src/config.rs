//! The `preprocess` model's configuration, read once at load (a bad parameter fails the
//! load, naming it) and checked against the declared tensors, so that clients, the
//! ensemble and the backend agree on every shape. Pure: takes the config JSON, no FFI.

use preprocess_core::{DecodeLimits, StageSizes};
use serde_json::Value;
use std::time::Duration;
use triton_backend::model_config::{dims, parameter, tensor};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("parameter '{key}' = {value:?} is invalid: {reason}")]
    Invalid { key: &'static str, value: String, reason: String },
    #[error("{0}")]
    Contract(String),
}

/// Tensor names of the stage's contract (`docs/preprocess.md`).
pub const INPUT_IMAGE: &str = "image";
pub const OUTPUT_YOLO: &str = "yolo_input";
pub const OUTPUT_CLIP: &str = "clip_input";
pub const OUTPUT_ORIGINAL: &str = "original";
pub const OUTPUT_LETTERBOX: &str = "letterbox";
pub const OUTPUT_IMAGE_SIZE: &str = "image_size";

/// Everything the backend takes from its model config.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreprocessConfig {
    pub sizes: StageSizes,
    pub limits: DecodeLimits,
    /// Pixels all concurrent decodes of the process may hold (`decode_pixel_budget`).
    pub decode_pixel_budget: u64,
    /// How long a decode waits for its pixels to fit in the budget (`decode_budget_wait_ms`).
    pub decode_budget_wait: Duration,
}

/// `max_pixels` default: a 48 MP phone photo (8000x6000) fits; more pixels add nothing to
/// the outputs (`original` is capped at 1920) and cost 11 bytes each while decoding.
pub const DEFAULT_MAX_PIXELS: u64 = 50_000_000;
/// `decode_pixel_budget` default: four maximum-size photos (or about sixteen 12 MP ones) at
/// once, at most 200 M x 11 B = 2.2 GB of decode memory.
pub const DEFAULT_DECODE_PIXEL_BUDGET: u64 = 200_000_000;
/// `decode_budget_wait_ms` default: a few maximum-size decodes' time on a busy CPU.
pub const DEFAULT_DECODE_BUDGET_WAIT_MS: u64 = 10_000;

/// Reads an integer parameter in `min..=max`, `default` when absent.
fn integer<T>(config: &Value, key: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + Copy + std::fmt::Display,
    T::Err: std::fmt::Display,
{
    let Some(text) = parameter(config, key) else { return Ok(default) };
    let invalid = |reason: String| ConfigError::Invalid { key, value: text.to_string(), reason };
    let value: T = text.trim().parse().map_err(|e: T::Err| invalid(e.to_string()))?;
    if value < min || value > max {
        return Err(invalid(format!("must be between {min} and {max}")));
    }
    Ok(value)
}

impl PreprocessConfig {
    pub fn from_model_config(config: &Value) -> Result<Self, ConfigError> {
        let sizes = StageSizes {
            yolo_size: integer(config, "yolo_size", 640, 1, 8192)?,
            clip_size: integer(config, "clip_size", 256, 1, 4096)?,
            pad_value: integer(config, "pad_value", 114, 0, 255)?,
            original_max_side: integer(config, "original_max_side", 1920, 1, 65_535)?,
        };
        let limits = DecodeLimits {
            max_bytes: integer(config, "max_image_bytes", 50 << 20, 1, 1 << 30)?,
            max_pixels: integer(config, "max_pixels", DEFAULT_MAX_PIXELS, 1, 1 << 32)?,
        };
        let decode_pixel_budget = integer(config, "decode_pixel_budget", DEFAULT_DECODE_PIXEL_BUDGET, 1, 1 << 40)?;
        let wait_ms = integer(config, "decode_budget_wait_ms", DEFAULT_DECODE_BUDGET_WAIT_MS, 0, 600_000)?;
        let parsed = Self { sizes, limits, decode_pixel_budget, decode_budget_wait: Duration::from_millis(wait_ms) };
        parsed.check_tensors(config)?;
        Ok(parsed)
    }

    /// The declared tensors must be the ones this backend produces, with the sizes above.
    fn check_tensors(&self, config: &Value) -> Result<(), ConfigError> {
        let (yolo, clip) = (i64::from(self.sizes.yolo_size), i64::from(self.sizes.clip_size));
        let expected: [(&str, &str, &str, Vec<i64>); 6] = [
            ("input", INPUT_IMAGE, "TYPE_UINT8", vec![-1]),
            ("output", OUTPUT_YOLO, "TYPE_FP32", vec![3, yolo, yolo]),
            ("output", OUTPUT_CLIP, "TYPE_FP32", vec![3, clip, clip]),
            ("output", OUTPUT_ORIGINAL, "TYPE_UINT8", vec![-1, -1, 3]),
            ("output", OUTPUT_LETTERBOX, "TYPE_FP32", vec![3]),
            ("output", OUTPUT_IMAGE_SIZE, "TYPE_INT32", vec![2]),
        ];
        for (section, name, data_type, want) in expected {
            let declared = tensor(config, section, name)
                .ok_or_else(|| ConfigError::Contract(format!("{section} '{name}' is not declared")))?;
            let declared_type = declared.get("data_type").and_then(Value::as_str).unwrap_or("");
            if declared_type != data_type || dims(declared) != want {
                return Err(ConfigError::Contract(format!(
                    "{section} '{name}' is {declared_type} {:?}, this backend needs {data_type} {want:?} (from yolo_size / clip_size)",
                    dims(declared)
                )));
            }
        }
        let ragged =
            tensor(config, "input", INPUT_IMAGE).and_then(|t| t.get("allow_ragged_batch")).and_then(Value::as_bool);
        if ragged != Some(true) {
            return Err(ConfigError::Contract(format!(
                "input '{INPUT_IMAGE}' needs allow_ragged_batch: true (photos of one batch differ in size)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(params: &[(&str, &str)], yolo_dims: [i64; 3]) -> Value {
        let parameters: serde_json::Map<String, Value> =
            params.iter().map(|(k, v)| (k.to_string(), json!({ "string_value": v }))).collect();
        json!({
            "max_batch_size": 8,
            "parameters": parameters,
            "input": [{ "name": "image", "data_type": "TYPE_UINT8", "dims": ["-1"], "allow_ragged_batch": true }],
            "output": [
                { "name": "yolo_input", "data_type": "TYPE_FP32", "dims": yolo_dims },
                { "name": "clip_input", "data_type": "TYPE_FP32", "dims": ["3", "256", "256"] },
                { "name": "original", "data_type": "TYPE_UINT8", "dims": ["-1", "-1", "3"] },
                { "name": "letterbox", "data_type": "TYPE_FP32", "dims": ["3"] },
                { "name": "image_size", "data_type": "TYPE_INT32", "dims": ["2"] },
            ],
        })
    }

    #[test]
    fn defaults_and_overrides() {
        let parsed = PreprocessConfig::from_model_config(&config(&[], [3, 640, 640])).unwrap();
        assert_eq!(
            parsed.sizes,
            StageSizes { yolo_size: 640, clip_size: 256, pad_value: 114, original_max_side: 1920 }
        );
        assert_eq!(parsed.limits, DecodeLimits { max_bytes: 50 << 20, max_pixels: 50_000_000 });
        assert_eq!((parsed.decode_pixel_budget, parsed.decode_budget_wait), (200_000_000, Duration::from_secs(10)));
        let parsed = PreprocessConfig::from_model_config(&config(
            &[
                ("yolo_size", "320"),
                ("pad_value", "0"),
                ("original_max_side", "1024"),
                ("max_pixels", "48000000"),
                ("decode_pixel_budget", "96000000"),
                ("decode_budget_wait_ms", "0"),
            ],
            [3, 320, 320],
        ))
        .unwrap();
        assert_eq!((parsed.sizes.yolo_size, parsed.sizes.pad_value, parsed.sizes.original_max_side), (320, 0, 1024));
        assert_eq!(parsed.limits.max_pixels, 48_000_000);
        assert_eq!((parsed.decode_pixel_budget, parsed.decode_budget_wait), (96_000_000, Duration::ZERO));
    }

    #[test]
    fn bad_parameters_name_themselves() {
        for (key, value) in [
            ("yolo_size", "0"),
            ("pad_value", "256"),
            ("clip_size", "big"),
            ("max_pixels", "-5"),
            ("max_image_bytes", "0"),
            ("decode_pixel_budget", "0"),
            ("decode_budget_wait_ms", "600001"),
        ] {
            let error = PreprocessConfig::from_model_config(&config(&[(key, value)], [3, 640, 640])).unwrap_err();
            assert!(matches!(&error, ConfigError::Invalid { key: k, .. } if *k == key), "{key}={value}: {error}");
            assert!(error.to_string().contains(key));
        }
    }

    #[test]
    fn tensors_must_match_the_sizes() {
        let error = PreprocessConfig::from_model_config(&config(&[("yolo_size", "320")], [3, 640, 640])).unwrap_err();
        assert!(error.to_string().contains("yolo_input"), "{error}");
        let mut not_ragged = config(&[], [3, 640, 640]);
        not_ragged["input"][0]["allow_ragged_batch"] = json!(false);
        assert!(PreprocessConfig::from_model_config(&not_ragged)
            .unwrap_err()
            .to_string()
            .contains("allow_ragged_batch"));
    }
}
