//! BriVL's text tokenizer: HF `BertTokenizer` for `chinese-roberta-wwm-ext`, on the `tokenizers`
//! crate (pure Rust here: `fancy-regex`, no Oniguruma or C++, so it also builds for wasm32).
//!
//! The pipeline is the one `transformers`' `BertTokenizer.from_pretrained(<folder with vocab.txt>)`
//! builds:
//!
//! 1. `[PAD]`, `[UNK]`, `[CLS]`, `[SEP]` and `[MASK]` written literally in the text are split out
//!    first and map to their own ids (case-sensitive, matched before any normalisation), as HF does;
//! 2. `BertNormalizer`: drop NUL, U+FFFD and control/format characters, turn every whitespace into
//!    a space, put spaces around every CJK ideograph, strip accents (NFD, drop `Mn`), lowercase;
//! 3. `BertPreTokenizer`: split on whitespace and on every punctuation character;
//! 4. `WordPiece` (`##` continuation, greedy longest match; a word over 100 characters, or one that
//!    cannot be covered by vocabulary pieces, becomes a single `[UNK]`).
//!
//! [`TextTokenizer::encode`] then keeps the first `L - 2` pieces, wraps them in `[CLS] .. [SEP]`
//! and pads with `[PAD]` to exactly `L` ids, the same as HF's
//! `tokenizer(text, max_length=L, truncation=True, padding="max_length")`.
//!
//! The vocabulary is data passed in (one token a line, the line number is the id), so the model
//! file can carry it; nothing here reads files.

use ahash::AHashMap;
use thiserror::Error;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::{AddedToken, Tokenizer};

/// The sequence length the BriVL release uses.
pub const DEFAULT_MAX_LEN: usize = 32;
/// The smallest `L`: room for `[CLS]` and `[SEP]`.
pub const MIN_MAX_LEN: usize = 2;
/// BERT's position table has 512 rows; no `L` may exceed it.
pub const MAX_POSITIONS: usize = 512;
/// Words longer than this many characters become `[UNK]` (BERT's `max_input_chars_per_word`).
pub const MAX_INPUT_CHARS_PER_WORD: usize = 100;

pub const PAD_TOKEN: &str = "[PAD]";
pub const UNK_TOKEN: &str = "[UNK]";
pub const CLS_TOKEN: &str = "[CLS]";
pub const SEP_TOKEN: &str = "[SEP]";
/// Optional in the vocabulary; when present it is split out of the text like the others.
pub const MASK_TOKEN: &str = "[MASK]";

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenizerError {
    #[error("the vocabulary is empty")]
    EmptyVocab,
    #[error("the vocabulary has an empty entry at line {line}")]
    EmptyEntry { line: usize },
    #[error("the vocabulary lists {token:?} twice, at lines {first_line} and {line}")]
    DuplicateToken { token: String, first_line: usize, line: usize },
    #[error("the vocabulary has no {0} entry")]
    MissingSpecialToken(&'static str),
    #[error("the vocabulary has {0} entries, more than token ids can address")]
    VocabTooLarge(usize),
    #[error("sequence length {0} is out of range: it must be between {MIN_MAX_LEN} and {MAX_POSITIONS}")]
    BadMaxLen(usize),
    #[error("tokenizer failure: {0}")]
    Internal(String),
}

/// One encoded text: exactly `L` ids and the matching attention mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// `[CLS] pieces.. [SEP] [PAD]..`, length `L`.
    pub ids: Vec<u32>,
    /// 1 for the real tokens (`[CLS]` and `[SEP]` included), 0 for the padding. Use this, not
    /// `id == pad`, to find the padding: a literal `[PAD]` typed in the text is a real token.
    pub mask: Vec<u32>,
}

impl Encoded {
    /// How many positions are real tokens (`[CLS]` and `[SEP]` included); the rest is padding.
    pub fn real_len(&self) -> usize {
        self.mask.iter().take_while(|&&m| m == 1).count()
    }
}

/// The ids of the tokens the encoder itself inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    pub pad: u32,
    pub unk: u32,
    pub cls: u32,
    pub sep: u32,
    pub mask: Option<u32>,
}

pub struct TextTokenizer {
    inner: Tokenizer,
    special: SpecialIds,
    vocab_size: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("special", &self.special)
            .finish_non_exhaustive()
    }
}

/// Parses a `vocab.txt`: one token a line, id = line number from 0. A trailing newline, a leading
/// UTF-8 byte-order mark and `\r\n` line ends are accepted; empty entries and duplicates are errors.
fn parse_vocab(text: &str) -> Result<AHashMap<String, u32>, TokenizerError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let body = text.strip_suffix('\n').unwrap_or(text);
    if body.is_empty() {
        return Err(TokenizerError::EmptyVocab);
    }
    let mut vocab: AHashMap<String, u32> = AHashMap::new();
    for (index, line) in body.split('\n').enumerate() {
        let token = line.strip_suffix('\r').unwrap_or(line);
        if token.is_empty() {
            return Err(TokenizerError::EmptyEntry { line: index + 1 });
        }
        let id = u32::try_from(index).map_err(|_| TokenizerError::VocabTooLarge(index + 1))?;
        if let Some(&first) = vocab.get(token) {
            return Err(TokenizerError::DuplicateToken {
                token: token.to_owned(),
                first_line: first as usize + 1,
                line: index + 1,
            });
        }
        vocab.insert(token.to_owned(), id);
    }
    Ok(vocab)
}

impl TextTokenizer {
    /// Builds the tokenizer from the text of a BERT `vocab.txt`.
    pub fn from_vocab_text(vocab_text: &str) -> Result<Self, TokenizerError> {
        let vocab = parse_vocab(vocab_text)?;
        let vocab_size = vocab.len();
        let id = |token: &'static str| vocab.get(token).copied().ok_or(TokenizerError::MissingSpecialToken(token));
        let special = SpecialIds {
            pad: id(PAD_TOKEN)?,
            unk: id(UNK_TOKEN)?,
            cls: id(CLS_TOKEN)?,
            sep: id(SEP_TOKEN)?,
            mask: vocab.get(MASK_TOKEN).copied(),
        };

        let model = WordPiece::builder()
            .vocab(vocab)
            .unk_token(UNK_TOKEN.to_owned())
            .continuing_subword_prefix("##".to_owned())
            .max_input_chars_per_word(MAX_INPUT_CHARS_PER_WORD)
            .build()
            .map_err(|e| TokenizerError::Internal(e.to_string()))?;

        let mut inner = Tokenizer::new(model);
        // clean_text, handle_chinese_chars, strip_accents = None (follows lowercase), lowercase.
        inner.with_normalizer(Some(BertNormalizer::new(true, true, None, true)));
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        // HF registers the special tokens as added tokens matched on the raw text, in this order.
        let specials: Vec<AddedToken> = [PAD_TOKEN, UNK_TOKEN, CLS_TOKEN, SEP_TOKEN]
            .into_iter()
            .chain(special.mask.map(|_| MASK_TOKEN))
            .map(|t| AddedToken::from(t, true))
            .collect();
        inner.add_special_tokens(&specials);

        Ok(Self { inner, special, vocab_size })
    }

    /// Number of vocabulary entries (21,128 for `chinese-roberta-wwm-ext`).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn special_ids(&self) -> SpecialIds {
        self.special
    }

    /// The WordPiece ids of `text`, with no `[CLS]`/`[SEP]`, no truncation and no padding.
    pub fn pieces(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self.inner.encode(text, false).map_err(|e| TokenizerError::Internal(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// `[CLS] pieces [SEP]`, truncated to at most `max_len - 2` pieces and padded with `[PAD]` to
    /// exactly `max_len` ids. `max_len` must be in `2..=512` (BriVL uses 32, up to 80 as an option).
    pub fn encode(&self, text: &str, max_len: usize) -> Result<Encoded, TokenizerError> {
        if !(MIN_MAX_LEN..=MAX_POSITIONS).contains(&max_len) {
            return Err(TokenizerError::BadMaxLen(max_len));
        }
        let pieces = self.pieces(text)?;
        let kept = pieces.len().min(max_len - 2);
        let mut ids = Vec::with_capacity(max_len);
        ids.push(self.special.cls);
        ids.extend_from_slice(&pieces[..kept]);
        ids.push(self.special.sep);
        let real = ids.len();
        ids.resize(max_len, self.special.pad);
        let mut mask = vec![1u32; real];
        mask.resize(max_len, 0);
        Ok(Encoded { ids, mask })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const VOCAB: &str = include_str!("../../tests/fixtures/tokenizer/vocab.txt");
    const CORPUS: &str = include_str!("../../tests/fixtures/tokenizer/corpus.txt");
    const GOLDEN: &str = include_str!("../../tests/fixtures/tokenizer/golden.jsonl");

    fn zh() -> &'static TextTokenizer {
        static TOK: std::sync::OnceLock<TextTokenizer> = std::sync::OnceLock::new();
        TOK.get_or_init(|| TextTokenizer::from_vocab_text(VOCAB).expect("fixture vocab loads"))
    }

    #[test]
    fn tokenizer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<TextTokenizer>();
    }

    #[test]
    fn tokenizer_vocab_and_special_ids() {
        let t = zh();
        assert_eq!(t.vocab_size(), 21128);
        assert_eq!(t.special_ids(), SpecialIds { pad: 0, unk: 100, cls: 101, sep: 102, mask: Some(103) });
    }

    #[test]
    fn tokenizer_spec_example() {
        let e = zh().encode("一只猫 Dog Café", DEFAULT_MAX_LEN).unwrap();
        let mut want = vec![101, 671, 1372, 4344, 13030, 8377, 102];
        want.resize(32, 0);
        assert_eq!(e.ids, want);
        let mut mask = vec![1; 7];
        mask.resize(32, 0);
        assert_eq!(e.mask, mask);
        assert_eq!(e.real_len(), 7);
        assert_eq!(zh().pieces("一只猫 Dog Café").unwrap(), vec![671, 1372, 4344, 13030, 8377]);
    }

    #[test]
    fn tokenizer_truncates_and_pads() {
        let t = zh();
        let text = "猫".repeat(100);
        for l in [2usize, 3, 32, 80, 512] {
            let e = t.encode(&text, l).unwrap();
            assert_eq!(e.ids.len(), l);
            assert_eq!(e.mask.len(), l);
            assert_eq!(e.ids[0], 101);
            let real = (100 + 2).min(l);
            assert_eq!(e.real_len(), real);
            assert_eq!(e.ids[real - 1], 102);
            assert!(e.ids[1..real - 1].iter().all(|&id| id == 4344));
            assert!(e.ids[real..].iter().all(|&id| id == 0));
            assert!(e.mask[real..].iter().all(|&m| m == 0));
        }
        let empty = t.encode("", 32).unwrap();
        assert_eq!(&empty.ids[..3], &[101, 102, 0]);
        assert_eq!(empty.real_len(), 2);
    }

    #[test]
    fn tokenizer_rejects_bad_lengths() {
        for l in [0usize, 1, 513, usize::MAX] {
            assert_eq!(zh().encode("猫", l), Err(TokenizerError::BadMaxLen(l)));
        }
    }

    #[test]
    fn tokenizer_long_word_is_unk() {
        let t = zh();
        // "a" and "##a" are in the vocabulary, so 100 a's are pieces but 101 are one [UNK].
        let at_limit = t.pieces(&"a".repeat(100)).unwrap();
        assert!(!at_limit.is_empty() && !at_limit.contains(&100));
        assert_eq!(t.pieces(&"a".repeat(101)).unwrap(), vec![100]);
    }

    #[test]
    fn tokenizer_literal_special_tokens() {
        // As in HF: exact-case special tokens in the text keep their ids; lowercase ones do not.
        let t = zh();
        assert_eq!(t.pieces("[MASK]").unwrap(), vec![103]);
        assert_ne!(t.pieces("[mask]").unwrap(), vec![103]);
        let e = t.encode("[PAD]", 8).unwrap();
        assert_eq!(e.ids, vec![101, 0, 102, 0, 0, 0, 0, 0]);
        assert_eq!(e.mask, vec![1, 1, 1, 0, 0, 0, 0, 0]);
        assert_eq!(e.real_len(), 3);
    }

    #[test]
    fn tokenizer_vocab_errors() {
        use TokenizerError::*;
        let err = |v: &str| TextTokenizer::from_vocab_text(v).unwrap_err();
        assert_eq!(err(""), EmptyVocab);
        assert_eq!(err("\n"), EmptyVocab);
        assert_eq!(err("[PAD]\n[UNK]\n[CLS]\n"), MissingSpecialToken("[SEP]"));
        assert_eq!(err("[UNK]\n[CLS]\n[SEP]\n"), MissingSpecialToken("[PAD]"));
        assert_eq!(err("[PAD]\n[CLS]\n[SEP]\n"), MissingSpecialToken("[UNK]"));
        assert_eq!(err("[PAD]\n[UNK]\n[SEP]\n"), MissingSpecialToken("[CLS]"));
        assert_eq!(
            err("[PAD]\n[UNK]\n[CLS]\n[SEP]\na\nb\na\n"),
            DuplicateToken { token: "a".into(), first_line: 5, line: 7 }
        );
        assert_eq!(err("[PAD]\n[UNK]\n\n[CLS]\n[SEP]\n"), EmptyEntry { line: 3 });
        assert_eq!(err("[PAD]\n[UNK]\n[CLS]\n[SEP]\n\n"), EmptyEntry { line: 5 });
        let msg = err("[PAD]\n[UNK]\n[CLS]\n").to_string();
        assert!(msg.contains("[SEP]"), "{msg}");
        let msg = err("[PAD]\n[UNK]\n[CLS]\n[SEP]\nx\nx").to_string();
        assert!(msg.contains("\"x\"") && msg.contains("5") && msg.contains("6"), "{msg}");
    }

    #[test]
    fn tokenizer_small_vocab_variants() {
        // CRLF line ends, a BOM and no trailing newline; ids are line numbers; no [MASK] needed.
        let t = TextTokenizer::from_vocab_text("\u{feff}[UNK]\r\n[PAD]\r\n[SEP]\r\n[CLS]\r\ncat\r\n##s").unwrap();
        assert_eq!(t.vocab_size(), 6);
        assert_eq!(t.special_ids(), SpecialIds { pad: 1, unk: 0, cls: 3, sep: 2, mask: None });
        let e = t.encode("Cats dog", 6).unwrap();
        assert_eq!(e.ids, vec![3, 4, 5, 0, 2, 1]);
        assert_eq!(e.mask, vec![1, 1, 1, 1, 1, 0]);
    }

    #[test]
    fn tokenizer_never_panics_on_odd_text() {
        let t = zh();
        let odd = [
            "\0\0\0",
            "\u{fffd}\u{feff}\u{200b}",
            "\u{301}\u{301}",
            "\u{10ffff}\u{e000}",
            "\r\n\t\u{2028}\u{3000}",
            "[CLS][SEP][PAD][UNK][MASK]",
            "[",
            "##",
        ];
        for s in odd {
            let e = t.encode(s, 32).unwrap();
            assert_eq!(e.ids.len(), 32);
            assert_eq!(e.ids[0], 101);
        }
        let huge = "长文本 long text ".repeat(20_000);
        assert_eq!(t.encode(&huge, 80).unwrap().real_len(), 80);
    }

    /// Decodes the corpus file's escapes (`\\`, `\t`, `\n`, `\r`, `\xHH`, `\uHHHH`, `\UHHHHHHHH`).
    fn unescape(line: &str) -> String {
        let mut out = String::new();
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                out.push(c);
                continue;
            }
            let hex = |chars: &mut std::str::Chars, n: usize| {
                let h: String = chars.by_ref().take(n).collect();
                char::from_u32(u32::from_str_radix(&h, 16).expect("hex escape")).expect("scalar")
            };
            match chars.next().expect("escape at end of line") {
                '\\' => out.push('\\'),
                't' => out.push('\t'),
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                'x' => out.push(hex(&mut chars, 2)),
                'u' => out.push(hex(&mut chars, 4)),
                'U' => out.push(hex(&mut chars, 8)),
                other => panic!("unknown escape \\{other}"),
            }
        }
        out
    }

    #[test]
    fn tokenizer_golden_corpus() {
        let t = zh();
        let corpus: Vec<&str> = CORPUS.strip_suffix('\n').unwrap_or(CORPUS).split('\n').collect();
        let golden: Vec<serde_json::Value> =
            GOLDEN.lines().map(|l| serde_json::from_str(l).expect("golden line is JSON")).collect();
        assert_eq!(golden.len(), corpus.len(), "golden.jsonl is stale: regenerate it");
        assert!(corpus.len() >= 1000);
        let ids = |v: &serde_json::Value| -> Vec<u32> {
            v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
        };
        let (mut checked32, mut checked80, mut failures) = (0usize, 0usize, Vec::new());
        for (i, (src, g)) in corpus.iter().zip(&golden).enumerate() {
            assert_eq!(g["line"].as_u64(), Some(i as u64 + 1));
            let text = g["text"].as_str().unwrap();
            assert_eq!(unescape(src), text, "line {}: corpus and golden disagree", i + 1);
            for (key, real_key, l) in [("ids32", "real32", 32usize), ("ids80", "real80", 80)] {
                let Some(want) = g.get(key) else { continue };
                let want = ids(want);
                let want_real = g[real_key].as_u64().unwrap() as usize;
                let got = t.encode(text, l).unwrap();
                if got.ids != want || got.real_len() != want_real {
                    failures.push(format!(
                        "line {} L={l}: {src}\n  got  {:?} ({} real)\n  want {:?} ({want_real} real)",
                        i + 1,
                        got.ids,
                        got.real_len(),
                        want
                    ));
                }
                if l == 32 {
                    checked32 += 1
                } else {
                    checked80 += 1
                }
            }
        }
        let summary = format!(
            "tokenizer golden: {} lines, {checked32} at L=32 and {checked80} at L=80, {} mismatches",
            corpus.len(),
            failures.len()
        );
        #[cfg(not(target_arch = "wasm32"))]
        eprintln!("{summary}");
        #[cfg(target_arch = "wasm32")]
        wasm_bindgen_test::console_log!("{}", summary);
        assert!(failures.is_empty(), "{summary}\n{}", failures.join("\n"));
    }
}
