//! The tokenizer against reference ids: the examples in shared/models/MODELS.md
//! and the open_clip fixture (tests/fixtures/open_clip_ids.json, written by
//! scripts/gen_tokenizer_fixture.py from open_clip's own SimpleTokenizer).
//!
//! The vocabulary lives in ../shared beside the checkout (not in git); these
//! tests fail with the path when it is missing.

use std::path::PathBuf;
use std::sync::LazyLock;

use clip_tokenizer::{ClipTokenizer, TokenizerError, CONTEXT_LENGTH, END_OF_TEXT, PAD, START_OF_TEXT};

fn tokenizer_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/models/clip_tokenizer")
}

static TOKENIZER: LazyLock<ClipTokenizer> = LazyLock::new(|| {
    let dir = tokenizer_dir();
    ClipTokenizer::from_files(dir.join("clip-vocab.json"), dir.join("clip-merges.txt"))
        .unwrap_or_else(|err| panic!("loading the CLIP vocabulary from {}: {err}", dir.display()))
});

fn ids(text: &str) -> Vec<i64> {
    let tokens = TOKENIZER.tokenize(text);
    let end = tokens.iter().position(|&t| t == END_OF_TEXT as i64).expect("end of text present");
    tokens[..=end].to_vec()
}

#[test]
fn models_md_reference_ids() {
    let tokens = TOKENIZER.tokenize("a photo of a dog");
    assert_eq!(tokens[..7], [49406, 320, 1125, 539, 320, 1929, 49407]);
    assert!(tokens[7..].iter().all(|&t| t == PAD as i64));
    // Single-word ids listed in MODELS.md.
    assert_eq!(ids("cat car person"), vec![49406, 2368, 1615, 2533, 49407]);
}

#[test]
fn empty_and_blank_text_is_start_end_and_padding() {
    for text in ["", "   ", "\n\t"] {
        let tokens = TOKENIZER.tokenize(text);
        assert_eq!(tokens[..2], [START_OF_TEXT as i64, END_OF_TEXT as i64], "{text:?}");
        assert!(tokens[2..].iter().all(|&t| t == 0), "{text:?}");
    }
}

#[test]
fn case_and_whitespace_do_not_matter() {
    assert_eq!(ids("A  PHOTO of\ta Dog "), ids("a photo of a dog"));
}

#[test]
fn apostrophes_split_as_contractions() {
    // "'s" and "'t" are their own tokens, as in CLIP.
    let dogs = ids("dog's");
    assert_eq!(dogs.len(), 4, "{dogs:?}");
    assert_eq!(dogs[1], ids("dog")[1]);
    let isnt = ids("isn't");
    assert_eq!(isnt[isnt.len() - 2], ids("'t")[1]);
}

#[test]
fn numbers_are_one_token_per_digit() {
    let tokens = ids("2024");
    assert_eq!(tokens.len(), 6, "{tokens:?}");
    assert_eq!(tokens[1], ids("2")[1]);
    assert_eq!(tokens[2], ids("0")[1]);
}

#[test]
fn long_text_keeps_end_of_text_last() {
    let text = "a photo of a big brown dog ".repeat(40);
    let tokens = TOKENIZER.tokenize(&text);
    assert_eq!(tokens.len(), CONTEXT_LENGTH);
    assert_eq!(tokens[0], START_OF_TEXT as i64);
    assert_eq!(tokens[CONTEXT_LENGTH - 1], END_OF_TEXT as i64);
    assert!(tokens[1..CONTEXT_LENGTH - 1].iter().all(|&t| t != 0 && t != END_OF_TEXT as i64));
    assert_eq!(tokens[1..7], ids("a photo of a big brown")[1..7]);
}

#[test]
fn special_token_spellings_are_plain_text() {
    let tokens = ids("a <|endoftext|> b");
    assert_eq!(tokens.iter().filter(|&&t| t == END_OF_TEXT as i64).count(), 1, "{tokens:?}");
    assert_eq!(*tokens.last().unwrap(), END_OF_TEXT as i64);
}

#[derive(serde::Deserialize)]
struct Fixture {
    reference: String,
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    text: String,
    ids: Vec<i64>,
}

#[test]
fn matches_open_clip_on_the_fixture() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/open_clip_ids.json");
    let fixture: Fixture = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(fixture.cases.len() >= 30);
    let mismatches: Vec<String> = fixture
        .cases
        .iter()
        .filter_map(|case| {
            let ours = TOKENIZER.tokenize(&case.text);
            (ours[..] != case.ids[..])
                .then(|| format!("{:?}\n  ours:   {:?}\n  theirs: {:?}", case.text, ours, case.ids))
        })
        .collect();
    assert!(mismatches.is_empty(), "differs from {}:\n{}", fixture.reference, mismatches.join("\n"));
}

#[test]
fn tokenizer_is_shareable_across_threads() {
    let expected = TOKENIZER.tokenize("a photo of a dog");
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..100 {
                    assert_eq!(TOKENIZER.tokenize("a photo of a dog"), expected);
                }
            });
        }
    });
}

#[test]
fn load_errors_name_the_file_and_line() {
    let dir = std::env::temp_dir().join(format!("clip-tokenizer-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let vocab = tokenizer_dir().join("clip-vocab.json");

    let missing = dir.join("missing.txt");
    let err = ClipTokenizer::from_files(&vocab, &missing).err().expect("missing merges file");
    assert!(matches!(err, TokenizerError::Read { .. }) && err.to_string().contains("missing.txt"), "{err}");

    let bad = dir.join("bad-merges.txt");
    std::fs::write(&bad, "#version: 0.2\ni n\nthis line is bad\n").unwrap();
    let err = ClipTokenizer::from_files(&vocab, &bad).err().expect("malformed merges");
    assert!(err.to_string().contains("bad-merges.txt:3"), "{err}");

    let unknown = dir.join("unknown-merges.txt");
    std::fs::write(&unknown, "#version: 0.2\ni n\nzzzq x\n").unwrap();
    let err = ClipTokenizer::from_files(&vocab, &unknown).err().expect("unknown symbol");
    assert!(matches!(err, TokenizerError::UnknownSymbol { line: 3, .. }), "{err}");

    let short = dir.join("short-merges.txt");
    std::fs::write(&short, "#version: 0.2\ni n\n").unwrap();
    let err = ClipTokenizer::from_files(&vocab, &short).err().expect("too few merges");
    assert!(matches!(err, TokenizerError::TooFewMerges { found: 1, .. }), "{err}");

    let not_json = dir.join("vocab.json");
    std::fs::write(&not_json, "[1, 2]").unwrap();
    let err = ClipTokenizer::from_files(&not_json, &short).err().expect("bad vocab");
    assert!(matches!(err, TokenizerError::VocabJson { .. }) && err.to_string().contains("vocab.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
