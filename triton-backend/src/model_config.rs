//! Reading the model config JSON that Triton hands a backend (`Model::config`): parameters,
//! tensors and their dims, as the protobuf JSON mapping writes them (int64 as strings or
//! numbers). Validation of the values is each backend's own.

use serde_json::Value;

/// A `parameters { key: ... value { string_value: ... } }` entry.
pub fn parameter<'a>(config: &'a Value, key: &str) -> Option<&'a str> {
    config.get("parameters")?.get(key)?.get("string_value")?.as_str()
}

/// The tensor named `name` in `section` ("input" or "output").
pub fn tensor<'a>(config: &'a Value, section: &str, name: &str) -> Option<&'a Value> {
    config.get(section)?.as_array()?.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(name))
}

/// A tensor's `dims`; empty when absent.
pub fn dims(tensor: &Value) -> Vec<i64> {
    tensor
        .get("dims")
        .and_then(Value::as_array)
        .map(|dims| dims.iter().filter_map(|d| d.as_i64().or_else(|| d.as_str()?.parse().ok())).collect())
        .unwrap_or_default()
}

/// `max_batch_size`; 0 (no batching) when absent.
pub fn max_batch_size(config: &Value) -> usize {
    config.get("max_batch_size").and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok())).unwrap_or(0) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_protobuf_json_in_both_number_forms() {
        let config = json!({
            "max_batch_size": "8",
            "parameters": {"mode": {"string_value": "faces"}},
            "input": [{"name": "a", "dims": ["-1", 4]}],
        });
        assert_eq!(parameter(&config, "mode"), Some("faces"));
        assert_eq!(parameter(&config, "missing"), None);
        assert_eq!(dims(tensor(&config, "input", "a").unwrap()), [-1, 4]);
        assert!(tensor(&config, "output", "a").is_none());
        assert_eq!(max_batch_size(&config), 8);
        assert_eq!(max_batch_size(&json!({})), 0);
    }
}
