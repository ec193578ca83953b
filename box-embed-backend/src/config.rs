//! The backend's configuration, read once from the Triton model config at load time (a bad
//! config fails the load, not each request), and the limits read from the encoder's config.
//! Parameter `mode` picks what the model does: `boxes` (default, [`BoxEmbedConfig`]) or
//! `faces` ([`FaceAlignConfig`]); both send their crops to an encoder ([`EncoderLink`]).
//! Pure: takes JSON, no FFI, so unit tests cover it.

use crop_core::{CropPolicy, FaceAligner, FaceParameterError, RoiAlign};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use triton_backend::model_config::{dims, max_batch_size, parameter, tensor};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("parameter '{key}' is required")]
    Missing { key: &'static str },
    #[error("parameter '{key}' = {value:?} is invalid: {reason}")]
    Invalid { key: &'static str, value: String, reason: String },
    #[error("{0}")]
    Contract(String),
}

/// The model config, by mode.
#[derive(Debug, Clone)]
pub enum ModelConfig {
    Boxes(Arc<BoxEmbedConfig>),
    Faces(Arc<FaceAlignConfig>),
}

impl ModelConfig {
    pub fn from_model_config(config: &Value) -> Result<Self, ConfigError> {
        match parameter(config, "mode").unwrap_or("boxes") {
            "boxes" => Ok(Self::Boxes(Arc::new(BoxEmbedConfig::from_model_config(config)?))),
            "faces" => Ok(Self::Faces(Arc::new(FaceAlignConfig::from_model_config(config)?))),
            other => Err(ConfigError::Invalid {
                key: "mode",
                value: other.to_string(),
                reason: "expected \"boxes\" or \"faces\"".into(),
            }),
        }
    }
}

/// The encoder model called in-process: its tensor names, what it returns, and the side S
/// of the `[3, S, S]` items sent to it.
#[derive(Debug, Clone)]
pub struct EncoderLink {
    pub model: String,
    pub input: String,
    pub output: String,
    pub embedding_dim: usize,
    pub item_size: usize,
    /// Upper bound on items per encoder request; the encoder's own max batch size applies too.
    pub max_batch: Option<usize>,
    /// How long one execute call waits for the encoder (`encoder_timeout_ms`).
    pub timeout: Duration,
}

/// `encoder_timeout_ms` when the config has none: far above any healthy encoder call (a full
/// batch of 800 crops takes a few seconds on CPU stand-ins), short enough that a hung encoder
/// turns into errors before clients give up.
pub const DEFAULT_ENCODER_TIMEOUT_MS: &str = "30000";
/// Upper bound of `encoder_timeout_ms`: one hour.
pub const MAX_ENCODER_TIMEOUT_MS: u64 = 3_600_000;

/// Everything `box_embed` (mode `boxes`) takes from its own model config.
#[derive(Debug, Clone)]
pub struct BoxEmbedConfig {
    pub encoder: EncoderLink,
    pub max_boxes: usize,
    pub policy: CropPolicy,
    pub roi_align: RoiAlign,
    pub min_box_size: f32,
}

/// Everything the face mode takes from its model config.
#[derive(Debug, Clone)]
pub struct FaceAlignConfig {
    pub encoder: EncoderLink,
    pub max_faces: usize,
    pub aligner: FaceAligner,
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

/// Tensor names of this backend's own contract, box mode.
pub const OUTPUT_EMBEDDINGS: &str = "box_embeddings";
pub const OUTPUT_VALID: &str = "box_valid";
pub const OUTPUT_BOXES: &str = "boxes";
pub const INPUT_IMAGE_SIZE: &str = "image_size";
/// Tensor names of the face mode's contract (docs/faces.md).
pub const INPUT_NUM_FACES: &str = "num_faces";
pub const INPUT_LANDMARKS: &str = "face_landmarks";
pub const OUTPUT_FACE_EMBEDDINGS: &str = "face_embeddings";
pub const OUTPUT_FACE_VALID: &str = "face_valid";

fn check_output(config: &Value, name: &str, expected: Option<&[i64]>) -> Result<(), ConfigError> {
    let declared = tensor(config, "output", name)
        .ok_or_else(|| ConfigError::Contract(format!("output '{name}' is not declared")))?;
    match expected {
        Some(dims_expected) if dims(declared) != dims_expected => {
            Err(ConfigError::Contract(format!("output '{name}' dims {:?} must be {dims_expected:?}", dims(declared))))
        }
        _ => Ok(()),
    }
}

impl EncoderLink {
    fn from_model_config(config: &Value, item_size: usize, default_input: &str) -> Result<Self, ConfigError> {
        let max_batch = match parameter(config, "encoder_max_batch") {
            Some(_) => Some(positive("encoder_max_batch", parsed(config, "encoder_max_batch", None)?)?),
            None => None,
        };
        let timeout_ms: u64 = parsed(config, "encoder_timeout_ms", Some(DEFAULT_ENCODER_TIMEOUT_MS))?;
        if !(1..=MAX_ENCODER_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(ConfigError::Invalid {
                key: "encoder_timeout_ms",
                value: timeout_ms.to_string(),
                reason: format!("must be in 1..={MAX_ENCODER_TIMEOUT_MS}"),
            });
        }
        Ok(Self {
            model: required(config, "encoder_model")?.to_string(),
            input: parameter(config, "encoder_input").unwrap_or(default_input).to_string(),
            output: parameter(config, "encoder_output").unwrap_or("embeddings").to_string(),
            embedding_dim: positive("embedding_dim", parsed(config, "embedding_dim", None)?)?,
            item_size,
            max_batch,
            timeout: Duration::from_millis(timeout_ms),
        })
    }

    /// Checks the encoder's config against ours and returns how many items one encoder
    /// request may carry.
    pub fn batch_limit(&self, encoder_config: &Value) -> Result<usize, ConfigError> {
        let model = &self.model;
        let encoder_max = max_batch_size(encoder_config);
        if encoder_max == 0 {
            return Err(ConfigError::Contract(format!("encoder '{model}' must support batching (max_batch_size > 0)")));
        }
        let input = tensor(encoder_config, "input", &self.input)
            .ok_or_else(|| ConfigError::Contract(format!("encoder '{model}' has no input '{}'", self.input)))?;
        let s = self.item_size as i64;
        if dims(input) != [3, s, s] {
            return Err(ConfigError::Contract(format!(
                "encoder '{model}' input '{}' has dims {:?}, this model sends [3, {s}, {s}]",
                self.input,
                dims(input)
            )));
        }
        let output = tensor(encoder_config, "output", &self.output)
            .ok_or_else(|| ConfigError::Contract(format!("encoder '{model}' has no output '{}'", self.output)))?;
        if dims(output) != [self.embedding_dim as i64] {
            return Err(ConfigError::Contract(format!(
                "encoder '{model}' output '{}' has dims {:?}, embedding_dim is {}",
                self.output,
                dims(output),
                self.embedding_dim
            )));
        }
        Ok(self.max_batch.map_or(encoder_max, |cap| cap.min(encoder_max)))
    }
}

impl BoxEmbedConfig {
    pub fn from_model_config(config: &Value) -> Result<Self, ConfigError> {
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
        let roi_align = RoiAlign::new(crop_size, sampling_ratio).map_err(|e| ConfigError::Invalid {
            key: "crop_size",
            value: crop_size.to_string(),
            reason: e.to_string(),
        })?;
        let parsed = Self {
            encoder: EncoderLink::from_model_config(config, crop_size, "images")?,
            max_boxes: positive("max_boxes", parsed(config, "max_boxes", None)?)?,
            policy,
            roi_align,
            min_box_size,
        };
        // The declared outputs must agree with `embedding_dim`, so clients and the backend
        // see the same shapes.
        check_output(config, OUTPUT_EMBEDDINGS, Some(&[-1, parsed.encoder.embedding_dim as i64]))?;
        check_output(config, OUTPUT_VALID, None)?;
        check_output(config, OUTPUT_BOXES, Some(&[-1, 4]))?;
        Ok(parsed)
    }
}

impl FaceAlignConfig {
    pub fn from_model_config(config: &Value) -> Result<Self, ConfigError> {
        // The alignment settings are parsed in crop-core, which the gateway shares to
        // re-create the aligned faces from this same config.
        let aligner = FaceAligner::from_parameters(|key| parameter(config, key)).map_err(|e| match e {
            FaceParameterError::Missing { key } => ConfigError::Missing { key },
            FaceParameterError::Invalid { key, value, reason } => ConfigError::Invalid { key, value, reason },
        })?;
        let parsed = Self {
            encoder: EncoderLink::from_model_config(config, aligner.size, "faces")?,
            max_faces: positive("max_faces", parsed(config, "max_faces", None)?)?,
            aligner,
        };
        check_output(config, OUTPUT_FACE_EMBEDDINGS, Some(&[-1, parsed.encoder.embedding_dim as i64]))?;
        check_output(config, OUTPUT_FACE_VALID, Some(&[-1]))?;
        Ok(parsed)
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
        let c = BoxEmbedConfig::from_model_config(&config(&[("crop_policy", "context"), ("context_scale", "1.5")]))
            .unwrap();
        assert_eq!(c.encoder.model, "clip_image");
        assert_eq!(c.encoder.embedding_dim, 512);
        assert_eq!(c.encoder.item_size, 256);
        assert_eq!(c.max_boxes, 100);
        assert_eq!(c.roi_align.crop_size, 256);
        assert_eq!(c.roi_align.sampling_ratio, 2);
        assert_eq!(c.policy, CropPolicy::Context { scale: 1.5 });
    }

    #[test]
    fn bad_values_name_their_parameter() {
        for (key, value) in
            [("crop_policy", "squash"), ("max_boxes", "0"), ("embedding_dim", "abc"), ("min_box_size", "NaN")]
        {
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
    fn encoder_timeout_has_a_default_and_a_range() {
        let default = BoxEmbedConfig::from_model_config(&config(&[])).unwrap();
        assert_eq!(default.encoder.timeout, Duration::from_secs(30));
        let set = BoxEmbedConfig::from_model_config(&config(&[("encoder_timeout_ms", "1500")])).unwrap();
        assert_eq!(set.encoder.timeout, Duration::from_millis(1500));
        for bad in ["0", "-5", "3600001", "soon"] {
            let err = BoxEmbedConfig::from_model_config(&config(&[("encoder_timeout_ms", bad)])).unwrap_err();
            assert!(err.to_string().contains("encoder_timeout_ms"), "{bad}: {err}");
        }
        let faces = FaceAlignConfig::from_model_config(&face_config(&[("encoder_timeout_ms", "250")])).unwrap();
        assert_eq!(faces.encoder.timeout, Duration::from_millis(250));
    }

    #[test]
    fn output_dims_must_match_embedding_dim() {
        let err = BoxEmbedConfig::from_model_config(&config(&[("embedding_dim", "256")])).unwrap_err();
        assert!(matches!(err, ConfigError::Contract(_)), "{err}");
    }

    #[test]
    fn encoder_contract_and_batch_limit() {
        let c = BoxEmbedConfig::from_model_config(&config(&[])).unwrap().encoder;
        assert_eq!(c.batch_limit(&encoder(32, 256, 512)).unwrap(), 32);
        assert!(c.batch_limit(&encoder(0, 256, 512)).is_err());
        assert!(c.batch_limit(&encoder(32, 224, 512)).is_err());
        assert!(c.batch_limit(&encoder(32, 256, 768)).is_err());
        let capped = BoxEmbedConfig::from_model_config(&config(&[("encoder_max_batch", "4")])).unwrap();
        assert_eq!(capped.encoder.batch_limit(&encoder(32, 256, 512)).unwrap(), 4);
    }

    fn face_config(params: &[(&str, &str)]) -> Value {
        let mut parameters = serde_json::Map::new();
        for (k, v) in [
            ("mode", "faces"),
            ("encoder_model", "face_encoder"),
            ("embedding_dim", "128"),
            ("max_faces", "50"),
            ("face_size", "112"),
        ]
        .iter()
        .chain(params)
        {
            parameters.insert((*k).into(), json!({ "string_value": v }));
        }
        json!({
            "output": [
                { "name": "face_embeddings", "dims": ["-1", "128"] },
                { "name": "face_valid", "dims": ["-1"] }
            ],
            "parameters": parameters
        })
    }

    #[test]
    fn mode_picks_the_config() {
        assert!(matches!(ModelConfig::from_model_config(&config(&[])).unwrap(), ModelConfig::Boxes(_)));
        let faces = ModelConfig::from_model_config(&face_config(&[])).unwrap();
        let ModelConfig::Faces(c) = &faces else { panic!("{faces:?}") };
        assert_eq!((c.max_faces, c.aligner.size), (50, 112));
        assert_eq!((c.encoder.input.as_str(), c.encoder.item_size, c.encoder.embedding_dim), ("faces", 112, 128));
        let err = ModelConfig::from_model_config(&config(&[("mode", "people")])).unwrap_err();
        assert!(err.to_string().contains("mode"), "{err}");
    }

    #[test]
    fn face_settings_are_checked() {
        let own = ("face_template", "38,51,73,51,56,71,41,92,70,92");
        assert!(FaceAlignConfig::from_model_config(&face_config(&[own])).is_ok());
        for (key, value) in [
            ("face_template", "1,2,3"),
            ("face_template", "1,1,1,1,1,1,1,1,1,1"),
            ("face_size", "0"),
            ("max_faces", "0"),
            ("landmark_margin", "-1"),
            ("min_landmark_aspect", "x"),
        ] {
            let err = FaceAlignConfig::from_model_config(&face_config(&[(key, value)])).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }), "{key}={value}: {err}");
        }
        let err = FaceAlignConfig::from_model_config(&face_config(&[("embedding_dim", "512")])).unwrap_err();
        assert!(matches!(err, ConfigError::Contract(_)), "{err}");
        let c = FaceAlignConfig::from_model_config(&face_config(&[])).unwrap().encoder;
        let encoder = json!({
            "max_batch_size": 32,
            "input": [{ "name": "faces", "dims": [3, 112, 112] }],
            "output": [{ "name": "embeddings", "dims": [128] }]
        });
        assert_eq!(c.batch_limit(&encoder).unwrap(), 32);
    }
}
