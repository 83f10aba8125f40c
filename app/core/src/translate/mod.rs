//! English queries on a Chinese model: offline query translation.
//!
//! BriVL's text tower was trained on Chinese. A query is checked for its language
//! ([`detect::detect`]); Chinese passes through unchanged, English (and the English runs of a mixed
//! query) is turned into Chinese with an offline dictionary derived from CC-CEDICT
//! (`app/core/data/en-zh.tsv`, built by `tests/reference/translate/make_dict.py`) and a small
//! grammar ([`english`]). Words the dictionary lacks stay in English: the model's vocabulary still
//! has pieces for them. Pure computation on bytes the caller passes in, so the same code runs
//! natively and in wasm.

pub mod detect;
pub mod dict;
pub mod english;

use serde::Serialize;

pub use detect::{detect, Lang};
pub use dict::DictError;

/// The dictionary shipped with brivl, for builds that embed it (the web app fetches the same file
/// from the site instead, to keep the wasm binary small).
#[cfg(not(target_arch = "wasm32"))]
pub const BUILTIN_TABLE: &[u8] = include_bytes!("../../data/en-zh.tsv");

/// What a query becomes before it reaches the text tower.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreparedQuery {
    pub lang: Lang,
    /// The Chinese text actually embedded; shown to the user, who may edit it.
    pub query_used: String,
    /// English words the dictionary does not know, kept in English in `query_used`.
    pub unknown: Vec<String>,
}

pub struct Dictionary {
    table: dict::Table,
}

impl Dictionary {
    /// Parses the table (`key \t chinese \t pos \t classifier` lines, `#` comments).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DictError> {
        Ok(Self { table: dict::Table::parse(bytes)? })
    }

    /// The table shipped with brivl.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn builtin() -> Result<Self, DictError> {
        Self::from_bytes(BUILTIN_TABLE)
    }

    /// The shipped table, parsed once per process on first use.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn shared() -> Result<&'static Self, DictError> {
        static SHARED: std::sync::OnceLock<Result<Dictionary, DictError>> = std::sync::OnceLock::new();
        SHARED.get_or_init(Self::builtin).as_ref().map_err(Clone::clone)
    }

    /// How many English keys the table has.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Chinese passes through unchanged; English and mixed queries are translated run by run.
    pub fn prepare_query(&self, text: &str) -> PreparedQuery {
        let lang = detect(text);
        if lang == Lang::Chinese {
            return PreparedQuery { lang, query_used: text.to_string(), unknown: Vec::new() };
        }
        let mut unknown = Vec::new();
        let mut out = String::new();
        for run in detect::runs(text) {
            match run {
                detect::Run::Chinese(zh) => push_part(&mut out, zh),
                detect::Run::Other(other) => {
                    let lower = other.to_lowercase();
                    let words = english_words(&lower);
                    if !words.is_empty() {
                        let zh = english::translate(&self.table, &words, &mut unknown);
                        push_part(&mut out, &zh);
                    }
                }
            }
        }
        let query_used = tidy(&out);
        // Nothing but filler ("the"): searching the text as typed beats searching nothing.
        let query_used = if query_used.is_empty() { text.trim().to_string() } else { query_used };
        PreparedQuery { lang, query_used, unknown }
    }
}

/// Splits lowercase text into words: letters, digits and inner apostrophes; a possessive "'s" is
/// dropped and hyphens split ("snow-covered" -> "snow", "covered").
fn english_words(text: &str) -> Vec<&str> {
    text.split(|c: char| !(detect::is_latin(c) || c.is_ascii_digit() || c == '\'' || c == '&'))
        .map(|w| w.trim_matches('\''))
        .map(|w| w.strip_suffix("'s").unwrap_or(w))
        .filter(|w| !w.is_empty())
        .collect()
}

fn push_part(out: &mut String, part: &str) {
    out.push(' ');
    out.push_str(part.trim());
    out.push(' ');
}

/// Removes spaces except between two Latin-script words, which need one.
fn tidy(s: &str) -> String {
    let words: Vec<&str> = s.split_whitespace().collect();
    let mut out = String::new();
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            let prev_latin = words[i - 1].chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
            let next_latin = w.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
            if prev_latin || next_latin {
                out.push(' ');
            }
        }
        out.push_str(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const TABLE: &str = "cat\t猫\tn\t只\ndog\t狗\tn\t只\nsofa\t沙发\tn\t张\nyellow\t黄色\ta\t\nduck\t鸭子\tn\t只\n\
        water\t水面\tn\t\nblue\t蓝色\ta\t\nrun\t奔跑\tv\t\nbeach\t沙滩\tn\t\nsunset\t日落\tn\t\nsea\t海\tn\t\n\
        night\t夜晚\tn\t\ncity\t城市\tn\t座\nsleep\t睡觉\tv\t\nball\t球\tn\t个\ndress\t连衣裙\tn\t条\ncoffee\t咖啡\tn\t\nred\t红色\ta\t\ncar\t汽车\tn\t辆\nrain\t雨\tn\t\n\
        big\t大\ta\t\ntree\t树\tn\t棵\nlake\t湖\tn\t\nhouse\t房子\tn\t座\nice cream\t冰淇淋\tn\t\n";

    fn dict() -> Dictionary {
        Dictionary::from_bytes(TABLE.as_bytes()).unwrap()
    }

    fn zh(q: &str) -> String {
        dict().prepare_query(q).query_used
    }

    #[test]
    fn chinese_passes_through_unchanged() {
        let d = dict();
        let p = d.prepare_query(" 海边的日落 ");
        assert_eq!(p, PreparedQuery { lang: Lang::Chinese, query_used: " 海边的日落 ".into(), unknown: vec![] });
        assert_eq!(d.prepare_query("2024").query_used, "2024");
    }

    #[test]
    fn english_noun_phrases_and_places() {
        assert_eq!(zh("a cat on a sofa"), "一只猫在沙发上");
        assert_eq!(zh("cats on the sofa"), "猫在沙发上");
        assert_eq!(zh("Two yellow ducks on blue water"), "两只黄色的鸭子在蓝色的水面上");
        assert_eq!(zh("big tree"), "大树");
        assert_eq!(zh("red car in the rain"), "红色的汽车在雨中");
        assert_eq!(zh("house by the lake"), "房子在湖边");
        assert_eq!(zh("sunset over the sea"), "海上的日落");
        assert_eq!(zh("city at night"), "夜晚的城市");
        assert_eq!(zh("a cup of coffee"), "一杯咖啡");
        assert_eq!(zh("ice creams"), "冰淇淋");
    }

    #[test]
    fn verbs_go_after_places() {
        assert_eq!(zh("dogs running on the beach"), "狗在沙滩上奔跑");
        assert_eq!(zh("two dogs running on the beach at sunset"), "日落时两只狗在沙滩上奔跑");
    }

    #[test]
    fn with_of_and_clothes_attach_to_the_noun() {
        assert_eq!(zh("a dog with a red ball"), "一只带红色的球的狗");
        assert_eq!(zh("cat in a red dress"), "穿着红色的连衣裙的猫");
        assert_eq!(zh("trees of the city"), "城市的树");
        assert_eq!(zh("a cat and a dog"), "一只猫和狗");
        assert_eq!(zh("sleeping cat"), "睡觉的猫");
    }

    #[test]
    fn unknown_words_stay_english_and_are_listed() {
        let p = dict().prepare_query("zebra on the beach");
        assert_eq!(p.lang, Lang::English);
        assert_eq!(p.query_used, "zebra 在沙滩上");
        assert_eq!(p.unknown, vec!["zebra".to_string()]);
        assert_eq!(zh("the"), "the");
    }

    #[test]
    fn odd_input_never_panics_and_never_comes_back_empty() {
        let d = dict();
        let long = "red car on the beach with a dog ".repeat(300);
        for q in [
            "of",
            "of of of",
            "a a a",
            "with",
            "in",
            "and and",
            "'s",
            "-",
            "的 the 猫 of",
            "two",
            "lots of",
            "pair of",
            "cup of",
            "on in at",
            "with with cat",
            "cat of of dog",
            "running running",
            "2 2 2",
            "🐱 the",
            "x",
            &long,
        ] {
            let p = d.prepare_query(q);
            assert!(!p.query_used.trim().is_empty(), "{q:?} -> {:?}", p.query_used);
        }
    }

    #[test]
    fn mixed_queries_translate_only_the_english() {
        let p = dict().prepare_query("红色的 car");
        assert_eq!(p.lang, Lang::Mixed);
        assert_eq!(p.query_used, "红色的汽车");
        assert_eq!(zh("cat 在沙发上"), "猫在沙发上");
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn shared_table_is_parsed_once() {
        let a = Dictionary::shared().unwrap();
        assert!(std::ptr::eq(a, Dictionary::shared().unwrap()));
        assert_eq!(a.prepare_query("a cat on a sofa").query_used, "一只猫在沙发上");
    }

    #[test]
    fn shipped_table_loads_and_translates() {
        // The bytes the web app fetches; natively the same as `Dictionary::builtin()`.
        let d = Dictionary::from_bytes(include_bytes!("../../data/en-zh.tsv")).unwrap();
        assert!(d.len() > 10_000, "{}", d.len());
        assert_eq!(d.prepare_query("two yellow ducks on the water").query_used, "两只黄色的鸭子在水面上");
    }
}
