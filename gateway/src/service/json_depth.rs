//! The nesting depth of JSON text, found in one linear pass before parsing, so a deeply
//! nested body is refused with the limit's name instead of reaching the parser's own
//! recursion limit (or a recursive walk of the parsed value).

/// Whether `text` nests arrays and objects deeper than `max` (a top-level object is depth
/// 1). Brackets inside strings do not count; invalid JSON is left to the parser.
pub fn exceeds(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in text {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::exceeds;

    #[test]
    fn counts_only_structural_brackets() {
        assert!(!exceeds(br#"{"a": [1, {"b": 2}]}"#, 3));
        assert!(exceeds(br#"{"a": [1, {"b": 2}]}"#, 2));
        assert!(!exceeds(br#"{"a": "[[[[{{{{", "b": "\"[[["}"#, 1));
        assert!(!exceeds(b"17", 0));
    }

    #[test]
    fn a_megabyte_of_brackets_is_refused_at_the_limit() {
        let deep = "[".repeat(1 << 20);
        assert!(exceeds(deep.as_bytes(), 32));
        let nested = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(!exceeds(nested.as_bytes(), 32));
    }
}
