//! The backend's configuration, read once from the Triton model config at load time (a bad
//! config fails the load, not each request), and the limits read from the encoder's config.
//! Pure: takes JSON, no FFI, so unit tests cover it.

use crop_core::{CropPolicy, RoiAlign};
use serde_json::Value;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("parameter '{key}' is required")]
    Missing { key: &'static str },
    #[error("parameter '{key}' = {value:?} is invalid: {reason}")]
    Invalid { key: &'static str, value: String, reason: String },
    #[error("{0}")]
    Contract(String),
}

/// Everything `box_embed` takes from its own model config.
#[derive(Debug, Clone)]
pub struct BoxEmbedConfig {
    pub encoder_model: String,
    pub encoder_input: String,
    pub encoder_output: String,
    pub embedding_dim: usize,
    pub max_boxes: usize,
    pub policy: CropPolicy,
    pub roi_align: RoiAlign,
    pub min_box_size: f32,
    /// Upper bound on crops per encoder request; the encoder's own max batch size applies too.
    pub encoder_max_batch: Option<usize>,
}

fn parameter<'a>(config: &'a Value, key: &'static str) -> Option<&'a str> {
    config.get("parameters")?.get(key)?.get("string_value")?.as_str()
}

fn required<'a>(config: &'a Value, key: &'static str) -> Result<&'a str, ConfigError> {
    parameter(config, key).ok_or(ConfigError::Missing { key })
}

fn parsed<T: std::str::FromStr>(config: &Value, key: &'static str, default: Option<&str>) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let text = match (parameter(config, key), default) {
        (Some(v), _) => v,
        (None, Some(d)) => d,
        (None, None) => return Err(ConfigError::Missing { key }),
    };
    text.trim().parse::<T>().map_err(|e| ConfigError::Invalid { key, value: text.to_string(), reason: e.to_string() })
}

fn positive(key: &'static str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        return Err(ConfigError::Invalid { key, value: "0".into(), reason: "must be at least 1".into() });
    }
    Ok(value)
}

/// Reads a dims array from the config (protobuf JSON writes int64 as strings or numbers).
pub fn dims(tensor: &Value) -> Vec<i64> {
    tensor
        .get("dims")
        .and_then(Value::as_array)
        .map(|dims| dims.iter().filter_map(|d| d.as_i64().or_else(|| d.as_str()?.parse().ok())).collect())
        .unwrap_or_default()
}

fn tensor<'a>(config: &'a Value, section: &str, name: &str) -> Option<&'a Value> {
    config.get(section)?.as_array()?.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(name))
}

pub fn max_batch_size(config: &Value) -> usize {
    config
        .get("max_batch_size")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(0) as usize
}

/// Output names of this backend's own contract.
pub const OUTPUT_EMBEDDINGS: &str = "box_embeddings";
pub const OUTPUT_VALID: &str = "box_valid";
pub const OUTPUT_BOXES: &str = "boxes";
pub const INPUT_IMAGE_SIZE: &str = "image_size";

impl BoxEmbedConfig {
    pub fn from_model_config(config: &Value) -> Result<Self, ConfigError> {
        let embedding_dim = positive("embedding_dim", parsed(config, "embedding_dim", None)?)?;
        let crop_size = positive("crop_size", parsed(config, "crop_size", None)?)?;
        let sampling_ratio = positive("sampling_ratio", parsed(config, "sampling_ratio", Some("2"))?)?;
        let context_scale: f32 = parsed(config, "context_scale", Some("1.25"))?;
        let policy_name = required(config, "crop_policy")?;
        let policy = CropPolicy::parse(policy_name, context_scale).map_err(|e| ConfigError::Invalid {
            key: "crop_policy",
            value: policy_name.to_string(),
            reason: e.to_string(),
        })?;
        let min_box_size: f32 = parsed(config, "min_box_size", Some("1.0"))?;
        if !(min_box_size.is_finite() && min_box_size > 0.0) {
            return Err(ConfigError::Invalid {
                key: "min_box_size",
                value: min_box_size.to_string(),
                reason: "must be a finite number > 0".into(),
            });
        }
        let encoder_max_batch = match parameter(config, "encoder_max_batch") {
            Some(_) => Some(positive("encoder_max_batch", parsed(config, "encoder_max_batch", None)?)?),
            None => None,
        };
        let roi_align = RoiAlign::new(crop_size, sampling_ratio)
            .map_err(|e| ConfigError::Invalid { key: "crop_size", value: crop_size.to_string(), reason: e.to_string() })?;
        let parsed = Self {
            encoder_model: required(config, "encoder_model")?.to_string(),
            encoder_input: parameter(config, "encoder_input").unwrap_or("images").to_string(),
            encoder_output: parameter(config, "encoder_output").unwrap_or("embeddings").to_string(),
            embedding_dim,
            max_boxes: positive("max_boxes", parsed(config, "max_boxes", None)?)?,
            policy,
            roi_align,
            min_box_size,
            encoder_max_batch,
        };
        parsed.check_outputs(config)?;
        Ok(parsed)
    }

    /// The declared outputs must agree with `embedding_dim`, so clients and the backend see
    /// the same shapes.
    fn check_outputs(&self, config: &Value) -> Result<(), ConfigError> {
        let embeddings = tensor(config, "output", OUTPUT_EMBEDDINGS)
            .ok_or_else(|| ConfigError::Contract(format!("output '{OUTPUT_EMBEDDINGS}' is not declared")))?;
        let expected = [-1, self.embedding_dim as i64];
        if dims(embeddings) != expected {
            return Err(ConfigError::Contract(format!(
                "output '{OUTPUT_EMBEDDINGS}' dims {:?} must be {expected:?} (embedding_dim)",
                dims(embeddings)
            )));
        }
        if tensor(config, "output", OUTPUT_VALID).is_none() {
            return Err(ConfigError::Contract(format!("output '{OUTPUT_VALID}' is not declared")));
        }
        match tensor(config, "output", OUTPUT_BOXES) {
            None => return Err(ConfigError::Contract(format!("output '{OUTPUT_BOXES}' is not declared"))),
            Some(boxes) if dims(boxes) != [-1, 4] => {
                return Err(ConfigError::Contract(format!("output '{OUTPUT_BOXES}' dims {:?} must be [-1, 4]", dims(boxes))))
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Checks the encoder's config against ours and returns how many crops one encoder
    /// request may carry.
    pub fn encoder_batch_limit(&self, encoder_config: &Value) -> Result<usize, ConfigError> {
        let model = &self.encoder_model;
        let encoder_max = max_batch_size(encoder_config);
        if encoder_max == 0 {
            return Err(ConfigError::Contract(format!("encoder '{model}' must support batching (max_batch_size > 0)")));
        }
        let input = tensor(encoder_config, "input", &self.encoder_input)
            .ok_or_else(|| ConfigError::Contract(format!("encoder '{model}' has no input '{}'", self.encoder_input)))?;
        let s = self.roi_align.crop_size as i64;
        if dims(input) != [3, s, s] {
            return Err(ConfigError::Contract(format!(
                "encoder '{model}' input '{}' has dims {:?}, crops are [3, {s}, {s}]",
                self.encoder_input,
                dims(input)
            )));
        }
        let output = tensor(encoder_config, "output", &self.encoder_output)
            .ok_or_else(|| ConfigError::Contract(format!("encoder '{model}' has no output '{}'", self.encoder_output)))?;
        if dims(output) != [self.embedding_dim as i64] {
            return Err(ConfigError::Contract(format!(
                "encoder '{model}' output '{}' has dims {:?}, embedding_dim is {}",
                self.encoder_output,
                dims(output),
                self.embedding_dim
            )));
        }
        Ok(self.encoder_max_batch.map_or(encoder_max, |cap| cap.min(encoder_max)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(params: &[(&str, &str)]) -> Value {
        let mut parameters = serde_json::Map::new();
        for (k, v) in [
            ("encoder_model", "clip_image"),
            ("embedding_dim", "512"),
            ("max_boxes", "100"),
            ("crop_size", "256"),
            ("crop_policy", "stretch"),
        ] {
            parameters.insert(k.into(), json!({ "string_value": v }));
        }
        for (k, v) in params {
            parameters.insert((*k).into(), json!({ "string_value": v }));
        }
        json!({
            "max_batch_size": 8,
            "output": [
                { "name": "box_embeddings", "dims": ["-1", "512"] },
                { "name": "box_valid", "dims": ["-1"] },
                { "name": "boxes", "dims": ["-1", "4"] }
            ],
            "parameters": parameters
        })
    }

    fn encoder(max_batch: u64, s: i64, d: i64) -> Value {
        json!({
            "max_batch_size": max_batch,
            "input": [{ "name": "images", "dims": [3, s, s] }],
            "output": [{ "name": "embeddings", "dims": [d.to_string()] }]
        })
    }

    #[test]
    fn reads_every_setting_from_parameters() {
        let c = BoxEmbedConfig::from_model_config(&config(&[("crop_policy", "context"), ("context_scale", "1.5")])).unwrap();
        assert_eq!(c.encoder_model, "clip_image");
        assert_eq!(c.embedding_dim, 512);
        assert_eq!(c.max_boxes, 100);
        assert_eq!(c.roi_align.crop_size, 256);
        assert_eq!(c.roi_align.sampling_ratio, 2);
        assert_eq!(c.policy, CropPolicy::Context { scale: 1.5 });
    }

    #[test]
    fn bad_values_name_their_parameter() {
        for (key, value) in [("crop_policy", "squash"), ("max_boxes", "0"), ("embedding_dim", "abc"), ("min_box_size", "NaN")] {
            let err = BoxEmbedConfig::from_model_config(&config(&[(key, value)])).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        let mut missing = config(&[]);
        missing["parameters"].as_object_mut().unwrap().remove("encoder_model");
        assert_eq!(
            BoxEmbedConfig::from_model_config(&missing).unwrap_err(),
            ConfigError::Missing { key: "encoder_model" }
        );
    }

    #[test]
    fn output_dims_must_match_embedding_dim() {
        let err = BoxEmbedConfig::from_model_config(&config(&[("embedding_dim", "256")])).unwrap_err();
        assert!(matches!(err, ConfigError::Contract(_)), "{err}");
    }

    #[test]
    fn encoder_contract_and_batch_limit() {
        let c = BoxEmbedConfig::from_model_config(&config(&[])).unwrap();
        assert_eq!(c.encoder_batch_limit(&encoder(32, 256, 512)).unwrap(), 32);
        assert!(c.encoder_batch_limit(&encoder(0, 256, 512)).is_err());
        assert!(c.encoder_batch_limit(&encoder(32, 224, 512)).is_err());
        assert!(c.encoder_batch_limit(&encoder(32, 256, 768)).is_err());
        let capped = BoxEmbedConfig::from_model_config(&config(&[("encoder_max_batch", "4")])).unwrap();
        assert_eq!(capped.encoder_batch_limit(&encoder(32, 256, 512)).unwrap(), 4);
    }
}
