//! Which language a query is in, and its split into Chinese and Latin-script runs.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Chinese characters and nothing in Latin letters; also a query with neither (digits, emoji,
    /// punctuation), which passes through unchanged like Chinese.
    Chinese,
    /// Latin letters and no Chinese characters.
    English,
    /// Both.
    Mixed,
}

/// A CJK ideograph (the blocks BERT's tokenizer treats as Chinese characters).
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// A letter of an English word: ASCII or Latin-1/Extended-A letters ("café", "naïve").
pub fn is_latin(c: char) -> bool {
    c.is_ascii_alphabetic() || (matches!(c as u32, 0xC0..=0x24F) && c.is_alphabetic())
}

pub fn detect(text: &str) -> Lang {
    let zh = text.chars().any(is_cjk);
    let en = text.chars().any(is_latin);
    match (zh, en) {
        (true, true) => Lang::Mixed,
        (false, true) => Lang::English,
        _ => Lang::Chinese,
    }
}

/// One run of a mixed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run<'a> {
    /// Chinese characters with whatever non-letters sit among them; kept as typed.
    Chinese(&'a str),
    /// Everything between Chinese runs: English words, digits, spaces, punctuation.
    Other(&'a str),
}

/// Splits text into maximal Chinese runs (CJK characters plus the CJK punctuation and spaces
/// between them) and the rest.
pub fn runs(text: &str) -> Vec<Run<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_zh: Option<bool> = None;
    for (i, c) in text.char_indices() {
        let zh = is_cjk(c);
        match in_zh {
            Some(cur) if cur != zh => {
                let s = &text[start..i];
                out.push(if cur { Run::Chinese(s) } else { Run::Other(s) });
                start = i;
                in_zh = Some(zh);
            }
            None => in_zh = Some(zh),
            _ => {}
        }
    }
    if let Some(cur) = in_zh {
        let s = &text[start..];
        out.push(if cur { Run::Chinese(s) } else { Run::Other(s) });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn detects_each_language() {
        assert_eq!(detect("海边的日落"), Lang::Chinese);
        assert_eq!(detect("两只猫，在沙发上。"), Lang::Chinese);
        assert_eq!(detect("sunset over the sea"), Lang::English);
        assert_eq!(detect("Café at NIGHT"), Lang::English);
        assert_eq!(detect("红色的 car"), Lang::Mixed);
        assert_eq!(detect("cat 猫"), Lang::Mixed);
        assert_eq!(detect("2024 红包"), Lang::Chinese);
        assert_eq!(detect("2 dogs"), Lang::English);
    }

    #[test]
    fn digits_emoji_and_empty_pass_as_chinese() {
        assert_eq!(detect(""), Lang::Chinese);
        assert_eq!(detect("2024"), Lang::Chinese);
        assert_eq!(detect("🐱🌅"), Lang::Chinese);
        assert_eq!(detect("  !? "), Lang::Chinese);
        assert_eq!(detect("🐱 cat"), Lang::English);
        assert_eq!(detect("🐱 猫"), Lang::Chinese);
    }

    #[test]
    fn runs_split_at_script_changes() {
        assert_eq!(runs("红色的 car"), vec![Run::Chinese("红色的"), Run::Other(" car")]);
        assert_eq!(
            runs("a 猫 on 沙发"),
            vec![Run::Other("a "), Run::Chinese("猫"), Run::Other(" on "), Run::Chinese("沙发")]
        );
        assert_eq!(runs(""), vec![]);
        assert_eq!(runs("dog"), vec![Run::Other("dog")]);
    }
}
