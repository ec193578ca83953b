//! Text cleanup before pre-tokenization, as open_clip's `_clean_lower` does it:
//! `ftfy.fix_text`, `html.unescape` twice, strip, collapse whitespace, lower-case.
//!
//! `ftfy` is reproduced for the fixes that change ordinary typed or pasted
//! text, in ftfy 6's order and per line, repeated until nothing changes:
//! HTML entities ending in ';' (only when the line has no '<'), C1 controls
//! read as Windows-1252, Latin ligatures, fullwidth/halfwidth forms, curly
//! quotes, ANSI terminal escapes, unwanted control characters, then NFC.
//! Not reproduced: ftfy's mojibake repair (`fix_encoding`: re-decoding text
//! that was decoded with the wrong codec, e.g. "cafÃ©" -> "café") and its
//! decoding of all-caps entity names such as "&EACUTE;"; such text is
//! tokenized as it stands.

use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

/// ftfy's loop stops when a pass changes nothing; this bounds pathological
/// input (each nesting level of "&amp;amp;..." takes one pass).
const MAX_FIX_PASSES: usize = 16;

static HTML_ENTITY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"&#?[0-9A-Za-z]{1,24};").expect("valid regex"));
static ANSI_ESCAPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\x1b\[[\d;]*[a-zA-Z]").expect("valid regex"));

/// The whole cleanup: the text the CLIP pre-tokenizer sees.
pub fn clean(text: &str) -> String {
    let fixed = fix_text(text);
    let unescaped = htmlize::unescape(htmlize::unescape(fixed.as_str()));
    collapse_whitespace(&unescaped).to_lowercase()
}

/// ftfy's `fix_text`: each line (with its line break) is fixed on its own.
fn fix_text(text: &str) -> String {
    text.split_inclusive('\n').map(fix_line).collect()
}

fn fix_line(line: &str) -> String {
    let unescape_entities = !line.contains('<');
    let mut text = line.to_owned();
    for _ in 0..MAX_FIX_PASSES {
        let mut next = if unescape_entities { unescape_terminated_entities(&text) } else { text.clone() };
        let mut fixed = String::with_capacity(next.len());
        next.chars().for_each(|c| fix_char(c, &mut fixed));
        next = ANSI_ESCAPE.replace_all(&fixed, "").into_owned();
        next.retain(|c| !is_unwanted_control(c));
        next = next.nfc().collect();
        if next == text {
            break;
        }
        text = next;
    }
    text
}

/// ftfy's `unescape_html`: only entities that end in ';' are decoded, so that
/// informal text such as "this&not that" stays as written.
fn unescape_terminated_entities(text: &str) -> String {
    HTML_ENTITY
        .replace_all(text, |caps: &regex::Captures<'_>| {
            let entity = &caps[0];
            let decoded = htmlize::unescape(entity);
            // A partly decoded entity ("&ampx;" -> "&x;"): keep it whole, as ftfy does.
            if decoded.contains(';') {
                entity.to_owned()
            } else {
                decoded.into_owned()
            }
        })
        .into_owned()
}

/// The per-character fixes in ftfy's order: C1 controls, ligatures,
/// character width, curly quotes (each fix sees the previous one's output).
fn fix_char(c: char, out: &mut String) {
    let c = c1_as_windows_1252(c);
    if let Some(letters) = latin_ligature(c) {
        out.extend(letters.chars().map(uncurl_quote));
    } else if let Some(standard) = standard_width(c) {
        out.extend(standard.chars().map(uncurl_quote));
    } else {
        out.push(uncurl_quote(c));
    }
}

/// C1 control characters are almost always Windows-1252 bytes decoded as
/// Latin-1; browsers read them as Windows-1252 too. The five bytes that
/// Windows-1252 leaves undefined stay as they are.
fn c1_as_windows_1252(c: char) -> char {
    const WINDOWS_1252_80_9F: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}', '\u{90}', '‘',
        '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
    ];
    match c {
        '\u{80}'..='\u{9f}' => WINDOWS_1252_80_9F[c as usize - 0x80],
        _ => c,
    }
}

/// Latin ligatures and legacy digraphs, split into their letters (ftfy keeps
/// intentional ones such as 'æ').
fn latin_ligature(c: char) -> Option<&'static str> {
    Some(match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return None,
    })
}

/// Fullwidth and halfwidth forms (U+FF01..U+FFEF) to their NFKC standard
/// forms, and the ideographic space to a plain space.
fn standard_width(c: char) -> Option<String> {
    match c {
        '\u{3000}' => Some(" ".to_owned()),
        '\u{ff01}'..='\u{ffef}' => {
            let standard: String = c.nfkc().collect();
            (standard.chars().ne(std::iter::once(c))).then_some(standard)
        }
        _ => None,
    }
}

fn uncurl_quote(c: char) -> char {
    match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
        '\u{201c}'..='\u{201f}' => '"',
        _ => c,
    }
}

/// ASCII controls other than tab, line feed, form feed and carriage return;
/// deprecated Arabic format controls; the byte order mark; interlinear
/// annotation marks and the object replacement character.
fn is_unwanted_control(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}' | '\u{e}'..='\u{1f}' | '\u{7f}'
        | '\u{206a}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffc}')
}

/// Python's `" ".join(text.split())`: `str.split()` also splits on the
/// information separators U+1C..U+1F, which are not Unicode White_Space.
fn collapse_whitespace(text: &str) -> String {
    let is_python_space = |c: char| c.is_whitespace() || matches!(c, '\u{1c}'..='\u{1f}');
    text.split(is_python_space).filter(|word| !word.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowercases_and_collapses_whitespace() {
        assert_eq!(clean("  A   Photo\tof\n\na DOG  "), "a photo of a dog");
        assert_eq!(clean("\u{3000}x\u{a0}y\u{2028}z"), "x y z");
    }

    #[test]
    fn unescapes_html_entities() {
        assert_eq!(clean("fish &amp; chips"), "fish & chips");
        assert_eq!(clean("caf&eacute; &#39;x&#x27;"), "café 'x'");
        // Twice-escaped entities are decoded completely.
        assert_eq!(clean("a &amp;amp; b"), "a & b");
        // Without ';' ftfy leaves it, but html.unescape decodes legacy names.
        assert_eq!(clean("AT&T &copy 2020"), "at&t © 2020");
    }

    #[test]
    fn applies_the_ftfy_character_fixes() {
        assert_eq!(clean("ﬁne ﬂower"), "fine flower");
        assert_eq!(clean("ＨＥＬＬＯ！"), "hello!");
        assert_eq!(clean("don\u{2019}t \u{201c}quote\u{201d}"), "don't \"quote\"");
        assert_eq!(clean("\u{1b}[31mred\u{1b}[0m"), "red");
        assert_eq!(clean("a\u{0}b\u{feff}c"), "abc");
        assert_eq!(clean("x\u{85}y \u{93}q\u{94}"), "x…y \"q\"");
        // Decomposed e + combining acute becomes the composed é (NFC).
        assert_eq!(clean("cafe\u{301}"), "café");
    }
}
