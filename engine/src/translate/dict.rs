//! The English -> Chinese table (`engine/data/en-zh.tsv`) and the English word normalisation
//! both the table's keys and the queries go through, so that the two always agree.

use std::collections::HashMap;

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DictError {
    #[error("the dictionary is not UTF-8 text")]
    NotUtf8,
    #[error("dictionary line {line}: expected `key \\t chinese \\t pos \\t classifier`, got {got:?}")]
    BadLine { line: usize, got: String },
    #[error("dictionary line {line}: part of speech must be n, v, a or l, got {got:?}")]
    BadPos { line: usize, got: String },
    #[error("the dictionary has no entries")]
    Empty,
}

/// What an English word or phrase is used as; the renderer picks the reading that fits the spot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pos {
    Noun,
    Verb,
    Adjective,
    /// A surface something stands on: "on the water" is 在水面上, though "water" is 水.
    Place,
}

/// One Chinese rendering of an English key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sense {
    pub zh: String,
    /// The measure word for counting it (`只` for 猫), when the table knows one.
    pub classifier: Option<String>,
}

/// The readings of one key, at most one per part of speech.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pub noun: Option<Sense>,
    pub verb: Option<Sense>,
    pub adjective: Option<Sense>,
    pub place: Option<Sense>,
}

impl Entry {
    pub fn get(&self, pos: Pos) -> Option<&Sense> {
        match pos {
            Pos::Noun => self.noun.as_ref(),
            Pos::Verb => self.verb.as_ref(),
            Pos::Adjective => self.adjective.as_ref(),
            Pos::Place => self.place.as_ref(),
        }
    }

    fn slot(&mut self, pos: Pos) -> &mut Option<Sense> {
        match pos {
            Pos::Noun => &mut self.noun,
            Pos::Verb => &mut self.verb,
            Pos::Adjective => &mut self.adjective,
            Pos::Place => &mut self.place,
        }
    }

    /// The reading for a word standing in `pos`, falling back to the others in a fixed order.
    pub fn prefer(&self, pos: Pos) -> &Sense {
        let order = match pos {
            Pos::Noun => [Pos::Noun, Pos::Adjective, Pos::Verb, Pos::Place],
            Pos::Adjective => [Pos::Adjective, Pos::Noun, Pos::Verb, Pos::Place],
            Pos::Verb => [Pos::Verb, Pos::Noun, Pos::Adjective, Pos::Place],
            Pos::Place => [Pos::Place, Pos::Noun, Pos::Adjective, Pos::Verb],
        };
        order.iter().find_map(|&p| self.get(p)).expect("an entry always has a reading")
    }
}

/// English key (normalised, see [`normalize_key`]) -> readings.
#[derive(Debug, Clone)]
pub struct Table {
    entries: HashMap<String, Entry>,
    /// The most words any key has: the longest phrase worth trying.
    pub max_words: usize,
}

/// Articles never take part in a match: "top of the mountain" and "top of mountain" are one key.
pub const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// Lowercases, drops articles and joins the words with single spaces.
pub fn normalize_key(text: &str) -> String {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower.split_whitespace().filter(|w| !ARTICLES.contains(w)).collect();
    words.join(" ")
}

impl Table {
    /// Parses the TSV table (`key \t chinese \t pos \t classifier`, pos one of n, v, a, l).
    /// A later line for the same key and part of speech replaces an earlier one.
    pub fn parse(bytes: &[u8]) -> Result<Self, DictError> {
        let text = std::str::from_utf8(bytes).map_err(|_| DictError::NotUtf8)?;
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut max_words = 1;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let cols: Vec<&str> = line.split('\t').collect();
            let bad = || DictError::BadLine { line: i + 1, got: line.to_string() };
            if cols.len() < 3 || cols.len() > 4 {
                return Err(bad());
            }
            let key = normalize_key(cols[0]);
            let zh = cols[1].trim();
            if key.is_empty() || zh.is_empty() {
                return Err(bad());
            }
            let pos = match cols[2].trim() {
                "n" => Pos::Noun,
                "v" => Pos::Verb,
                "a" => Pos::Adjective,
                "l" => Pos::Place,
                other => return Err(DictError::BadPos { line: i + 1, got: other.to_string() }),
            };
            let classifier = cols.get(3).map(|c| c.trim()).filter(|c| !c.is_empty()).map(str::to_string);
            let sense = Sense { zh: zh.to_string(), classifier };
            max_words = max_words.max(key.split(' ').count());
            *entries.entry(key).or_default().slot(pos) = Some(sense);
        }
        if entries.is_empty() {
            return Err(DictError::Empty);
        }
        Ok(Self { entries, max_words })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The exact key, no normalisation beyond what the caller did.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Looks up lowercase words: first as written, then with the last word's inflection removed
    /// ("red apples" -> "red apple"), then with every word's ("dogs running" -> "dog run").
    pub fn lookup(&self, words: &[&str]) -> Option<&Entry> {
        let surface = words.join(" ");
        if let Some(e) = self.entries.get(&surface) {
            return Some(e);
        }
        let (last, head) = words.split_last()?;
        for lemma in lemmas(last) {
            let mut key = head.join(" ");
            if !key.is_empty() {
                key.push(' ');
            }
            key.push_str(&lemma);
            if let Some(e) = self.entries.get(&key) {
                return Some(e);
            }
        }
        if words.len() > 1 {
            let firsts: Vec<String> =
                head.iter().map(|w| lemmas(w).into_iter().next().unwrap_or_else(|| w.to_string())).collect();
            for lemma in lemmas(last) {
                let key = format!("{} {}", firsts.join(" "), lemma);
                if let Some(e) = self.entries.get(&key) {
                    return Some(e);
                }
            }
        }
        None
    }
}

/// Irregular plurals and past forms that suffix stripping gets wrong.
const IRREGULAR: [(&str, &str); 24] = [
    ("children", "child"),
    ("people", "person"),
    ("men", "man"),
    ("women", "woman"),
    ("feet", "foot"),
    ("teeth", "tooth"),
    ("mice", "mouse"),
    ("geese", "goose"),
    ("leaves", "leaf"),
    ("knives", "knife"),
    ("wolves", "wolf"),
    ("shelves", "shelf"),
    ("loaves", "loaf"),
    ("lying", "lie"),
    ("dying", "die"),
    ("sat", "sit"),
    ("ran", "run"),
    ("flew", "fly"),
    ("ate", "eat"),
    ("fallen", "fall"),
    ("frozen", "freeze"),
    ("grew", "grow"),
    ("swam", "swim"),
    ("oxen", "ox"),
];

/// Candidate base forms of an inflected English word, most likely first (not including the word
/// itself). Plain suffix rules: plurals, -ing, -ed, and doubled consonants ("running" -> "run").
pub fn lemmas(word: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |s: String| {
        if s.len() >= 2 && s != word && !out.contains(&s) {
            out.push(s);
        }
    };
    if let Some(&(_, base)) = IRREGULAR.iter().find(|(w, _)| *w == word) {
        push(base.to_string());
    }
    let undouble = |stem: &str| -> Option<String> {
        let b = stem.as_bytes();
        let n = b.len();
        (n >= 3 && b[n - 1] == b[n - 2] && !b"aeiou".contains(&b[n - 1]) && b[n - 1] != b's' && b[n - 1] != b'l')
            .then(|| stem[..n - 1].to_string())
    };
    if let Some(stem) = word.strip_suffix("ing") {
        if let Some(s) = undouble(stem) {
            push(s);
        }
        push(stem.to_string());
        push(format!("{stem}e"));
    } else if let Some(stem) = word.strip_suffix("ied") {
        push(format!("{stem}y"));
    } else if let Some(stem) = word.strip_suffix("ed") {
        if let Some(s) = undouble(stem) {
            push(s);
        }
        push(stem.to_string());
        push(format!("{stem}e"));
    } else if let Some(stem) = word.strip_suffix("ies") {
        push(format!("{stem}y"));
    } else if let Some(stem) = word.strip_suffix("ves") {
        push(format!("{stem}f"));
        push(format!("{stem}fe"));
    } else if let Some(stem) = word.strip_suffix("es") {
        if ["s", "x", "z", "ch", "sh", "o"].iter().any(|e| stem.ends_with(e)) {
            push(stem.to_string());
        }
        push(format!("{stem}e"));
    } else if let Some(stem) = word.strip_suffix('s') {
        if !stem.ends_with('s') {
            push(stem.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn lemmas_cover_common_inflections() {
        assert_eq!(lemmas("running")[0], "run");
        assert!(lemmas("riding").contains(&"ride".to_string()));
        assert!(lemmas("playing").contains(&"play".to_string()));
        assert_eq!(lemmas("cities")[0], "city");
        assert_eq!(lemmas("boxes")[0], "box");
        assert!(lemmas("horses").contains(&"horse".to_string()));
        assert_eq!(lemmas("dogs")[0], "dog");
        assert_eq!(lemmas("children")[0], "child");
        assert!(lemmas("glass").is_empty());
        assert!(lemmas("parked").contains(&"park".to_string()));
    }

    #[test]
    fn table_parses_and_rejects_bad_lines() {
        let t = Table::parse(
            "# c\ncat\t猫\tn\t只\norange\t橙子\tn\t\norange\t橙色\ta\ntop of the mountain\t山顶\tn\n".as_bytes(),
        )
        .unwrap();
        assert_eq!(t.get("cat").unwrap().noun.as_ref().unwrap().classifier.as_deref(), Some("只"));
        assert_eq!(t.get("orange").unwrap().prefer(Pos::Adjective).zh, "橙色");
        assert_eq!(t.get("orange").unwrap().prefer(Pos::Noun).zh, "橙子");
        assert_eq!(t.lookup(&["top", "of", "mountain"]).unwrap().prefer(Pos::Noun).zh, "山顶");
        assert_eq!(t.lookup(&["cats"]).unwrap().prefer(Pos::Noun).zh, "猫");
        assert_eq!(t.max_words, 3);
        assert!(matches!(Table::parse(b"cat\n"), Err(DictError::BadLine { line: 1, .. })));
        assert!(matches!(Table::parse("cat\t猫\tq\n".as_bytes()), Err(DictError::BadPos { line: 1, .. })));
        assert!(matches!(Table::parse(b"# only a comment\n"), Err(DictError::Empty)));
        assert!(matches!(Table::parse(&[0xff, 0xfe]), Err(DictError::NotUtf8)));
    }
}
