//! The English -> Chinese table (`app/core/data/en-zh.tsv`) and the English inflections the lookup
//! undoes (plurals, -ing, -ed).

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
    #[error("dictionary line {line}: key {key:?} is not lowercase words without articles")]
    BadKey { line: usize, key: String },
    #[error("the dictionary is {0} bytes, more than 4 GiB")]
    TooLarge(usize),
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense<'a> {
    pub zh: &'a str,
    /// The measure word for counting it (`只` for 猫), when the table knows one.
    pub classifier: Option<&'a str>,
}

/// A byte range of the table's text.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// `part` is empty or a slice of `text`; offsets fit u32 because `parse` refuses larger tables.
    fn of(text: &str, part: &str) -> Self {
        if part.is_empty() {
            return Span { start: 0, len: 0 };
        }
        Span { start: (part.as_ptr() as usize - text.as_ptr() as usize) as u32, len: part.len() as u32 }
    }

    fn get<'a>(&self, text: &'a str) -> &'a str {
        &text[self.start as usize..(self.start + self.len) as usize]
    }
}

/// One line of the table: ranges into the text, no string of its own.
#[derive(Debug, Clone, Copy)]
struct Line {
    key: Span,
    pos: Pos,
    zh: Span,
    classifier: Span,
}

/// The readings of one key, at most one per part of speech.
#[derive(Debug, Clone, Copy)]
pub struct Entry<'a> {
    text: &'a str,
    lines: &'a [Line],
}

impl<'a> Entry<'a> {
    pub fn get(&self, pos: Pos) -> Option<Sense<'a>> {
        self.lines.iter().find(|l| l.pos == pos).map(|l| {
            let cl = l.classifier.get(self.text);
            Sense { zh: l.zh.get(self.text), classifier: (!cl.is_empty()).then_some(cl) }
        })
    }

    pub fn has(&self, pos: Pos) -> bool {
        self.lines.iter().any(|l| l.pos == pos)
    }

    /// The reading for a word standing in `pos`, falling back to the others in a fixed order.
    pub fn prefer(&self, pos: Pos) -> Sense<'a> {
        let order = match pos {
            Pos::Noun => [Pos::Noun, Pos::Adjective, Pos::Verb, Pos::Place],
            Pos::Adjective => [Pos::Adjective, Pos::Noun, Pos::Verb, Pos::Place],
            Pos::Verb => [Pos::Verb, Pos::Noun, Pos::Adjective, Pos::Place],
            Pos::Place => [Pos::Place, Pos::Noun, Pos::Adjective, Pos::Verb],
        };
        order.iter().find_map(|&p| self.get(p)).expect("an entry has at least one line")
    }
}

/// English key -> readings: the table's text kept whole, plus its lines sorted by key, so that
/// loading is one pass with no per-entry allocation and a lookup is a binary search.
#[derive(Debug, Clone)]
pub struct Table {
    text: String,
    lines: Vec<Line>,
    keys: usize,
    /// The most words any key has: the longest phrase worth trying.
    pub max_words: usize,
}

/// Articles never take part in a match: the query side drops them, so keys must not hold them.
pub const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// A key as the query side spells it: lowercase ASCII words (digits, `'` and `-` allowed) split by
/// single spaces, no articles.
fn is_normal(key: &str) -> bool {
    key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b' ' || b == b'\'' || b == b'-')
        && key.split(' ').all(|w| !w.is_empty() && !ARTICLES.contains(&w))
}

impl Table {
    /// Parses the TSV table (`key \t chinese \t pos \t classifier`, pos one of n, v, a, l; `#`
    /// comments). A later line for the same key and part of speech replaces an earlier one.
    pub fn parse(bytes: &[u8]) -> Result<Self, DictError> {
        let text = std::str::from_utf8(bytes).map_err(|_| DictError::NotUtf8)?.to_string();
        if text.len() > u32::MAX as usize {
            return Err(DictError::TooLarge(text.len()));
        }
        let mut lines = Vec::with_capacity(text.len() / 24);
        let mut max_words = 1;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || DictError::BadLine { line: i + 1, got: line.to_string() };
            let mut cols = line.split('\t');
            let (Some(key), Some(zh), Some(pos)) = (cols.next(), cols.next(), cols.next()) else {
                return Err(bad());
            };
            let classifier = cols.next().unwrap_or("").trim();
            if cols.next().is_some() || zh.trim().is_empty() {
                return Err(bad());
            }
            if !is_normal(key) {
                return Err(DictError::BadKey { line: i + 1, key: key.to_string() });
            }
            let pos = match pos.trim() {
                "n" => Pos::Noun,
                "v" => Pos::Verb,
                "a" => Pos::Adjective,
                "l" => Pos::Place,
                other => return Err(DictError::BadPos { line: i + 1, got: other.to_string() }),
            };
            max_words = max_words.max(key.split(' ').count());
            lines.push(Line {
                key: Span::of(&text, key),
                pos,
                zh: Span::of(&text, zh.trim()),
                classifier: Span::of(&text, classifier),
            });
        }
        if lines.is_empty() {
            return Err(DictError::Empty);
        }
        // Stable: among equal (key, pos) the later line stays last, and is the one kept.
        lines.sort_by(|a, b| a.key.get(&text).cmp(b.key.get(&text)).then((a.pos as u8).cmp(&(b.pos as u8))));
        let mut kept: Vec<Line> = Vec::with_capacity(lines.len());
        for l in lines {
            match kept.last_mut() {
                Some(prev) if prev.pos == l.pos && prev.key.get(&text) == l.key.get(&text) => *prev = l,
                _ => kept.push(l),
            }
        }
        let keys = 1 + kept.windows(2).filter(|w| w[0].key.get(&text) != w[1].key.get(&text)).count();
        Ok(Self { text, lines: kept, keys, max_words })
    }

    /// How many distinct keys.
    pub fn len(&self) -> usize {
        self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The exact key, no normalisation.
    pub fn get(&self, key: &str) -> Option<Entry<'_>> {
        let text = self.text.as_str();
        let first = self.lines.partition_point(|l| l.key.get(text) < key);
        let n = self.lines[first..].iter().take_while(|l| l.key.get(text) == key).count();
        (n > 0).then(|| Entry { text, lines: &self.lines[first..first + n] })
    }

    /// Looks up lowercase words: first as written, then with the last word's inflection removed
    /// ("red apples" -> "red apple"), then with every word's ("dogs running" -> "dog run").
    pub fn lookup(&self, words: &[&str]) -> Option<Entry<'_>> {
        let surface = words.join(" ");
        if let Some(e) = self.get(&surface) {
            return Some(e);
        }
        let (last, head) = words.split_last()?;
        for lemma in lemmas(last) {
            let mut key = head.join(" ");
            if !key.is_empty() {
                key.push(' ');
            }
            key.push_str(&lemma);
            if let Some(e) = self.get(&key) {
                return Some(e);
            }
        }
        if words.len() > 1 {
            let firsts: Vec<String> =
                head.iter().map(|w| lemmas(w).into_iter().next().unwrap_or_else(|| w.to_string())).collect();
            for lemma in lemmas(last) {
                let key = format!("{} {}", firsts.join(" "), lemma);
                if let Some(e) = self.get(&key) {
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
    if let Some(stem) = word.strip_suffix("ied") {
        push(format!("{stem}y"));
    } else if let Some(stem) = word.strip_suffix("ing").or_else(|| word.strip_suffix("ed")) {
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
            "# c\ncat\t猫\tn\t只\norange\t橙子\tn\t\ntop of mountain\t山顶\tn\norange\t橙色\ta\ncat\t猫咪\tn\t只\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t.get("cat").unwrap().get(Pos::Noun), Some(Sense { zh: "猫咪", classifier: Some("只") }));
        assert_eq!(t.get("orange").unwrap().prefer(Pos::Adjective).zh, "橙色");
        assert_eq!(t.get("orange").unwrap().prefer(Pos::Noun), Sense { zh: "橙子", classifier: None });
        assert_eq!(t.get("orange").unwrap().prefer(Pos::Verb).zh, "橙子");
        assert!(t.get("orang").is_none() && t.get("zebra").is_none());
        assert_eq!(t.lookup(&["top", "of", "mountain"]).unwrap().prefer(Pos::Noun).zh, "山顶");
        assert_eq!(t.lookup(&["cats"]).unwrap().prefer(Pos::Noun).zh, "猫咪");
        assert_eq!(t.max_words, 3);
        assert!(matches!(Table::parse(b"cat\n"), Err(DictError::BadLine { line: 1, .. })));
        assert!(matches!(Table::parse("cat\t猫\tq\n".as_bytes()), Err(DictError::BadPos { line: 1, .. })));
        assert!(matches!(Table::parse(b"# only a comment\n"), Err(DictError::Empty)));
        assert!(matches!(Table::parse(&[0xff, 0xfe]), Err(DictError::NotUtf8)));
        assert!(matches!(Table::parse("Cat\t猫\tn\n".as_bytes()), Err(DictError::BadKey { line: 1, .. })));
        assert!(matches!(Table::parse("the cat\t猫\tn\n".as_bytes()), Err(DictError::BadKey { line: 1, .. })));
        assert!(matches!(Table::parse("cat\t猫\tn\t只\textra\n".as_bytes()), Err(DictError::BadLine { .. })));
    }
}
