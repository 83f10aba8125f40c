//! English photo-search phrases -> Chinese: dictionary words arranged by a very small grammar.
//!
//! A query is read as one clause: an optional subject noun phrase, an optional verb (an -ing form
//! such as "running", or a word the table only knows as a verb) with its object, and places
//! ("on the beach"), times ("at night"), "with" and "of" attachments. Chinese wants the place before
//! the verb and modifiers before the noun, so "two dogs running on the beach at sunset" becomes
//! 日落时两只狗在沙滩上跑. Noun phrases are `[count + classifier] [modifiers] head`, a modifier of
//! two or more characters taking 的 (黄色的鸭子). Words the table does not know stay in English,
//! which BriVL's vocabulary can still read piece by piece.

use super::dict::{lemmas, Entry, Pos, Table};

/// How a place phrase is written: `pre` + place + `post`.
#[derive(Debug, Clone, Copy)]
struct Prep {
    pre: &'static str,
    post: &'static str,
    /// Without a verb: "海上的日落" (place first, as a modifier) instead of "日落在海上".
    modifier_style: bool,
    /// The place is a surface: its [`Pos::Place`] reading applies (在水面上).
    surface: bool,
}

const fn prep(pre: &'static str, post: &'static str, modifier_style: bool) -> Prep {
    Prep { pre, post, modifier_style, surface: false }
}

const fn surface(p: Prep) -> Prep {
    Prep { surface: true, ..p }
}

impl Prep {
    /// The locative after `np`: 里 turns into 中 for rain, snow, water...; 旁边 into 边 after a
    /// one-character place (湖边).
    fn post_for(&self, np: &Np) -> &'static str {
        let head = np.head();
        if self.post == IN.post && head.is_some_and(|h| h.is_in(&IN_ZHONG)) {
            "中"
        } else if self.post == NEAR.post && head.is_some_and(|h| h.zh(Pos::Noun).chars().count() == 1) {
            "边"
        } else {
            self.post
        }
    }
}

const ON: Prep = surface(prep("在", "上", false));
const IN: Prep = prep("在", "里", false);
const UNDER: Prep = prep("在", "下", false);
const OVER: Prep = surface(prep("在", "上", true));
const AT: Prep = prep("在", "", false);
const NEAR: Prep = prep("在", "旁边", false);
const BEHIND: Prep = prep("在", "后面", false);
const FRONT: Prep = prep("在", "前面", false);
const AROUND: Prep = prep("在", "周围", false);
const BETWEEN: Prep = prep("在", "之间", false);
const ALONG: Prep = prep("沿着", "", true);
const THROUGH: Prep = prep("穿过", "", true);
const FROM: Prep = prep("从", "", true);

/// Prepositions of more than one word, matched before anything else.
const PHRASE_PREPS: [(&[&str], Prep); 6] = [
    (&["in", "front", "of"], FRONT),
    (&["on", "top", "of"], ON),
    (&["next", "to"], NEAR),
    (&["close", "to"], NEAR),
    (&["in", "middle", "of"], IN),
    (&["out", "of"], FROM),
];

fn single_prep(w: &str) -> Option<Prep> {
    Some(match w {
        "on" | "upon" | "onto" | "atop" => ON,
        "in" | "inside" | "within" | "into" | "among" | "amid" => IN,
        "under" | "beneath" | "below" | "underneath" => UNDER,
        "over" | "above" | "across" => OVER,
        "at" | "during" => AT,
        "near" | "by" | "beside" | "besides" | "alongside" => NEAR,
        "behind" => BEHIND,
        "around" => AROUND,
        "between" => BETWEEN,
        "along" => ALONG,
        "through" => THROUGH,
        "from" => FROM,
        _ => return None,
    })
}

/// Places one is in the middle of rather than inside: "in the rain" is 在雨中, not 在雨里.
const IN_ZHONG: [&str; 14] = [
    "rain", "snow", "fog", "mist", "water", "wind", "sunlight", "sky", "air", "dark", "darkness", "crowd", "storm",
    "sea",
];

/// Nouns that name a time: "at night", "in winter" become a time phrase (夜晚的城市), not a place.
const TIMES: [&str; 20] = [
    "night",
    "evening",
    "morning",
    "afternoon",
    "sunset",
    "sunrise",
    "dawn",
    "dusk",
    "noon",
    "midnight",
    "twilight",
    "spring",
    "summer",
    "autumn",
    "fall",
    "winter",
    "daytime",
    "christmas",
    "dark",
    "nighttime",
];

/// What one is "in" when wearing it.
const CLOTHES: [&str; 16] = [
    "dress", "shirt", "coat", "jacket", "suit", "uniform", "costume", "kimono", "sweater", "skirt", "jeans", "clothes",
    "hoodie", "swimsuit", "gown", "hanfu",
];

/// Words that carry nothing for a photo search.
const FILLER: [&str; 31] = [
    "i", "we", "me", "the", "some", "very", "is", "are", "was", "were", "be", "being", "there", "that", "which", "who",
    "my", "our", "your", "his", "her", "their", "its", "this", "these", "those", "just", "showing", "shows", "to",
    "for",
];

/// "photo of", "picture of" ...: dropped together with their "of".
const FRAME_WORDS: [&str; 9] = ["photo", "photos", "picture", "pictures", "image", "images", "pic", "shot", "snapshot"];

/// Nouns that count what follows "of": "a cup of coffee" is 一杯咖啡.
const MEASURES: [(&str, &str); 23] = [
    ("cup", "杯"),
    ("mug", "杯"),
    ("glass", "杯"),
    ("bowl", "碗"),
    ("plate", "盘"),
    ("bottle", "瓶"),
    ("bunch", "束"),
    ("bouquet", "束"),
    ("pile", "堆"),
    ("stack", "堆"),
    ("heap", "堆"),
    ("group", "群"),
    ("flock", "群"),
    ("herd", "群"),
    ("crowd", "群"),
    ("pack", "群"),
    ("school", "群"),
    ("swarm", "群"),
    ("pair", "双"),
    ("slice", "片"),
    ("piece", "块"),
    ("field", "片"),
    ("vase", "瓶"),
];

/// -ing nouns that are never the verb of the clause.
const ING_NOUNS: [&str; 10] =
    ["building", "painting", "wedding", "evening", "morning", "ceiling", "clothing", "ring", "spring", "string"];

fn number(w: &str) -> Option<Count> {
    let zh = match w {
        "one" | "single" => "一",
        "two" | "both" => "两",
        "three" => "三",
        "four" => "四",
        "five" => "五",
        "six" => "六",
        "seven" => "七",
        "eight" => "八",
        "nine" => "九",
        "ten" => "十",
        "several" | "few" => "几",
        "many" | "lots" | "lot" | "much" | "numerous" => return Some(Count { zh: "很多".into(), classifier: false }),
        _ => {
            if !w.is_empty() && w.len() <= 4 && w.bytes().all(|b| b.is_ascii_digit()) {
                return Some(Count { zh: if w == "2" { "两".into() } else { w.into() }, classifier: true });
            }
            return None;
        }
    };
    Some(Count { zh: zh.into(), classifier: true })
}

#[derive(Debug, Clone)]
struct Count {
    zh: String,
    /// Whether a measure word follows (两只), which 很多 does not take.
    classifier: bool,
}

/// One content word or phrase of the query.
#[derive(Debug, Clone)]
struct Word<'t> {
    /// The English as matched (lowercase), for the place and time lists.
    en: String,
    /// `None`: not in the table, kept in English.
    entry: Option<Entry<'t>>,
    /// An -ing form whose base the table knows as a verb.
    ing_verb: bool,
    /// An -ing form before a noun ("sleeping baby"): the verb reading + 的 (睡觉的婴儿).
    verb_modifier: bool,
}

impl<'t> Word<'t> {
    fn zh(&self, pos: Pos) -> String {
        match self.entry {
            Some(e) => e.prefer(pos).zh.to_string(),
            None => format!(" {} ", self.en),
        }
    }

    fn classifier(&self) -> Option<&'t str> {
        self.entry.and_then(|e| e.prefer(Pos::Noun).classifier)
    }

    /// The base form, for the place/time lists: "nights" -> "night".
    fn is_in(&self, list: &[&str]) -> bool {
        list.contains(&self.en.as_str()) || lemmas(&self.en).iter().any(|l| list.contains(&l.as_str()))
    }

    fn only_verb(&self) -> bool {
        self.entry.is_some_and(|e| e.has(Pos::Verb) && !e.has(Pos::Noun) && !e.has(Pos::Adjective))
    }
}

#[derive(Debug, Clone)]
enum Item<'t> {
    Word(Word<'t>),
    Prep(Prep),
    Number(Count),
    And,
    Of,
    With,
    Wearing,
    /// A measure word fixed by the phrase ("a pair of" -> 双).
    Measure(&'static str),
    /// "a"/"an": 一 + classifier on the subject ("a red ball" -> 一个红色的球), nothing elsewhere
    /// ("on a sofa" -> 在沙发上).
    Article,
}

#[derive(Debug, Clone, Default)]
struct Np<'t> {
    count: Option<Count>,
    /// A classifier fixed by a measure noun ("cup of" -> 杯), overriding the head's own.
    measure: Option<&'static str>,
    words: Vec<Word<'t>>,
    /// "X with Y": rendered 带Y的X.
    with: Vec<Np<'t>>,
    /// "X wearing Y", "X in a red dress": rendered 穿着Y的X.
    wearing: Vec<Np<'t>>,
    /// "X of Y": rendered Y的X.
    of: Option<Box<Np<'t>>>,
    /// "X and Y".
    and: Vec<Np<'t>>,
}

impl<'t> Np<'t> {
    fn is_empty(&self) -> bool {
        self.words.is_empty() && self.count.is_none()
    }

    fn head(&self) -> Option<&Word<'t>> {
        self.words.last()
    }

    fn render(&self) -> String {
        self.render_as(Pos::Noun)
    }

    /// `head_pos` picks the head's reading: [`Pos::Place`] for a surface after "on".
    fn render_as(&self, head_pos: Pos) -> String {
        let mut out = String::new();
        if let Some(c) = &self.count {
            out.push_str(&c.zh);
            if c.classifier {
                let cl = self.measure.or_else(|| self.head().and_then(|h| h.classifier())).unwrap_or("个");
                out.push_str(cl);
            }
        }
        for w in &self.wearing {
            out.push_str(&format!("穿着{}的", w.render()));
        }
        for w in &self.with {
            out.push_str(&format!("带{}的", w.render()));
        }
        if let Some(of) = &self.of {
            out.push_str(&of.render());
            out.push('的');
        }
        if let Some((head, mods)) = self.words.split_last() {
            for m in mods {
                let zh = m.zh(if m.verb_modifier { Pos::Verb } else { Pos::Adjective });
                out.push_str(&zh);
                // 大树, 红花, but 黄色的鸭子 and 睡觉的婴儿: a one-character modifier binds without 的.
                if m.entry.is_some() && (m.verb_modifier || zh.chars().count() >= 2) && !zh.ends_with('的') {
                    out.push('的');
                }
            }
            out.push_str(&head.zh(head_pos));
        }
        for other in &self.and {
            out.push('和');
            out.push_str(&other.render_as(head_pos));
        }
        out
    }
}

#[derive(Debug, Default)]
struct Clause<'t> {
    subject: Option<Np<'t>>,
    verb: Option<Word<'t>>,
    object: Option<Np<'t>>,
    places: Vec<(Prep, Np<'t>)>,
    times: Vec<Np<'t>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Slot {
    Subject,
    Object,
    Place(usize),
}

/// Turns lowercase words into items: multi-word prepositions, then the longest phrase the table
/// knows (two words or more), then grammar words, then single table words, else unknown.
fn items<'t>(table: &'t Table, words: &[&str]) -> Vec<Item<'t>> {
    let mut out = Vec::new();
    let mut i = 0;
    'outer: while i < words.len() {
        let rest = &words[i..];
        for (pat, p) in PHRASE_PREPS {
            if rest.starts_with(pat) {
                out.push(Item::Prep(p));
                i += pat.len();
                continue 'outer;
            }
        }
        // "a lot of", "lots of": a count, the "of" belongs to it.
        if rest.len() >= 2 && matches!(rest[0], "lot" | "lots" | "couple" | "pair") && rest[1] == "of" {
            if rest[0] == "pair" {
                out.push(Item::Measure("双"));
            } else {
                let zh = if rest[0] == "couple" { "两" } else { "很多" };
                out.push(Item::Number(Count { zh: zh.into(), classifier: rest[0] == "couple" }));
            }
            i += 2;
            continue;
        }
        for n in (2..=table.max_words.min(rest.len())).rev() {
            let span = &rest[..n];
            // A phrase never swallows a grammar word at its edges ("dog on" is not a phrase).
            if is_grammar(span[0]) || is_grammar(span[n - 1]) {
                continue;
            }
            if let Some(entry) = table.lookup(span) {
                out.push(Item::Word(Word {
                    en: span.join(" "),
                    entry: Some(entry),
                    ing_verb: false,
                    verb_modifier: false,
                }));
                i += n;
                continue 'outer;
            }
        }
        let w = rest[0];
        i += 1;
        if let Some(p) = single_prep(w) {
            out.push(Item::Prep(p));
        } else if let Some(c) = number(w) {
            out.push(Item::Number(c));
        } else if w == "a" || w == "an" {
            out.push(Item::Article);
        } else if w == "and" || w == "&" {
            out.push(Item::And);
        } else if w == "of" {
            out.push(Item::Of);
        } else if w == "with" || w == "holding" {
            out.push(Item::With);
        } else if w == "wearing" || w == "dressed" {
            out.push(Item::Wearing);
        } else {
            out.push(Item::Word(word(table, w)));
        }
    }
    out
}

fn is_grammar(w: &str) -> bool {
    single_prep(w).is_some() || number(w).is_some() || matches!(w, "a" | "an" | "and" | "of" | "with")
}

fn word<'t>(table: &'t Table, w: &str) -> Word<'t> {
    let surface = table.get(w);
    let ing_base = w
        .strip_suffix("ing")
        .filter(|_| !ING_NOUNS.contains(&w))
        .and_then(|_| lemmas(w).into_iter().find_map(|l| table.get(&l).filter(|e| e.has(Pos::Verb))));
    let (entry, ing_verb) = match (surface, ing_base) {
        // "smiling" listed as an adjective keeps that reading.
        (Some(e), _) if e.has(Pos::Adjective) => (Some(e), false),
        // "running": the verb reading of "run", even where the table also lists "running".
        (_, Some(base)) => (Some(base), true),
        (Some(e), None) => (Some(e), false),
        (None, None) => (table.lookup(&[w]), false),
    };
    Word { en: w.to_string(), entry, ing_verb, verb_modifier: false }
}

fn parse<'t>(items: Vec<Item<'t>>) -> Clause<'t> {
    let mut clause = Clause::default();
    let mut cur = Np::default();
    let mut slot = Slot::Subject;
    // Set by "and" / "with" / "of": how the phrase being built joins the one before it.
    let mut join: Option<Item<'t>> = None;

    fn finish<'t>(clause: &mut Clause<'t>, slot: &mut Slot, join: &mut Option<Item<'t>>, np: Np<'t>) {
        if np.is_empty() {
            return;
        }
        let target = match *slot {
            Slot::Subject => &mut clause.subject,
            Slot::Object => &mut clause.object,
            Slot::Place(i) => {
                let (prep, place) = &mut clause.places[i];
                if place.is_empty() && join.is_none() {
                    let head = np.head();
                    if head.is_some_and(|h| h.is_in(&TIMES)) {
                        // A time, not a place: "at night" -> 夜晚的...
                        clause.times.push(np);
                    } else if prep.post == IN.post && head.is_some_and(|h| h.is_in(&CLOTHES)) {
                        // "woman in a red dress" is what she wears: 穿着红色的连衣裙的女人.
                        match &mut clause.subject {
                            Some(subject) => {
                                subject.wearing.push(np);
                                clause.places.pop();
                                // What follows ("... with a dog") belongs to the subject again.
                                *slot = if clause.verb.is_some() { Slot::Object } else { Slot::Subject };
                            }
                            None => *place = np,
                        }
                    } else {
                        *place = np;
                    }
                    return;
                }
                return attach(place, join.take(), np);
            }
        };
        match target {
            Some(prev) if join.is_some() => attach(prev, join.take(), np),
            Some(prev) => {
                // Two noun phrases in a row with nothing between: read as one ("dog beach").
                prev.words.extend(np.words);
            }
            None => *target = Some(np),
        }
    }

    fn attach<'t>(prev: &mut Np<'t>, join: Option<Item<'t>>, np: Np<'t>) {
        match join {
            Some(Item::With) => prev.with.push(np),
            Some(Item::Wearing) => prev.wearing.push(np),
            // "X of Y": `prev` is X, rendered Y的X.
            Some(Item::Of) => prev.of = Some(Box::new(np)),
            _ => prev.and.push(np),
        }
    }

    let mut items = items.into_iter().peekable();
    while let Some(item) = items.next() {
        match item {
            Item::Word(mut w) => {
                let before_noun = matches!(items.peek(), Some(Item::Word(_)));
                if w.ing_verb && cur.words.is_empty() && before_noun {
                    w.verb_modifier = true;
                    cur.words.push(w);
                    continue;
                }
                let is_verb = clause.verb.is_none() && (w.ing_verb || w.only_verb());
                if is_verb {
                    let np = std::mem::take(&mut cur);
                    finish(&mut clause, &mut slot, &mut join, np);
                    clause.verb = Some(w);
                    slot = Slot::Object;
                } else {
                    cur.words.push(w);
                }
            }
            Item::Measure(cl) => {
                cur.measure = Some(cl);
                cur.count.get_or_insert(Count { zh: "一".into(), classifier: true });
            }
            Item::Article => {
                if slot == Slot::Subject && clause.subject.is_none() && cur.is_empty() && join.is_none() {
                    cur.count = Some(Count { zh: "一".into(), classifier: true });
                }
            }
            Item::Number(c) => {
                if !cur.words.is_empty() {
                    let np = std::mem::take(&mut cur);
                    finish(&mut clause, &mut slot, &mut join, np);
                }
                cur.count = Some(c);
            }
            Item::Of => {
                let measure = cur
                    .head()
                    .filter(|_| cur.words.len() == 1)
                    .and_then(|h| MEASURES.iter().find(|(m, _)| h.en == *m || lemmas(&h.en).iter().any(|l| l == m)))
                    .map(|(_, cl)| *cl);
                if let Some(cl) = measure {
                    // "two cups of tea" -> 两杯茶: the measure noun becomes the classifier.
                    cur.words.clear();
                    cur.measure = Some(cl);
                    cur.count.get_or_insert(Count { zh: "一".into(), classifier: true });
                } else {
                    let np = std::mem::take(&mut cur);
                    finish(&mut clause, &mut slot, &mut join, np);
                    join = Some(Item::Of);
                }
            }
            Item::And | Item::With | Item::Wearing => {
                let np = std::mem::take(&mut cur);
                finish(&mut clause, &mut slot, &mut join, np);
                join = Some(item);
            }
            Item::Prep(p) => {
                let np = std::mem::take(&mut cur);
                finish(&mut clause, &mut slot, &mut join, np);
                join = None;
                clause.places.push((p, Np::default()));
                slot = Slot::Place(clause.places.len() - 1);
            }
        }
    }
    finish(&mut clause, &mut slot, &mut join, cur);
    clause.places.retain(|(_, np)| !np.is_empty());
    clause
}

fn render_place(p: &Prep, np: &Np) -> (String, String) {
    let post = p.post_for(np);
    let place = np.render_as(if p.surface { Pos::Place } else { Pos::Noun });
    // "在屋顶上上" never: a place already ending in its locative keeps one.
    let post = if !post.is_empty() && place.ends_with(post) { "" } else { post };
    (format!("{}{}{}", p.pre, place, post), format!("{}{}", place, if post.is_empty() { "" } else { post }))
}

/// Renders English words (lowercase, fillers still in) as Chinese; unknown words stay English.
pub fn translate(table: &Table, words: &[&str], unknown: &mut Vec<String>) -> String {
    let mut kept: Vec<&str> = Vec::with_capacity(words.len());
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let next = words.get(i + 1).copied();
        if FRAME_WORDS.contains(&w) && next == Some("of") {
            i += 2;
            continue;
        }
        if !FILLER.contains(&w) {
            kept.push(w);
        }
        i += 1;
    }
    let items = items(table, &kept);
    for it in &items {
        if let Item::Word(w) = it {
            if w.entry.is_none() && !unknown.contains(&w.en) {
                unknown.push(w.en.clone());
            }
        }
    }
    let clause = parse(items);
    let mut out = String::new();
    let times: Vec<String> = clause.times.iter().map(|t| t.render()).collect();
    let subject = clause.subject.as_ref().map(|s| s.render()).unwrap_or_default();
    if let Some(verb) = &clause.verb {
        if !times.is_empty() {
            out.push_str(&times.join(""));
            out.push_str(if subject.is_empty() { "" } else { "时" });
        }
        out.push_str(&subject);
        for (p, np) in &clause.places {
            out.push_str(&render_place(p, np).0);
        }
        out.push_str(&verb.zh(Pos::Verb));
        if let Some(obj) = &clause.object {
            out.push_str(&obj.render());
        }
    } else {
        let mut before = String::new();
        for t in &times {
            before.push_str(t);
            before.push('的');
        }
        let mut after = String::new();
        for (p, np) in &clause.places {
            let (as_place, bare) = render_place(p, np);
            if p.modifier_style && !subject.is_empty() {
                before.push_str(&if p.pre == "在" { bare } else { as_place });
                before.push('的');
            } else {
                after.push_str(&as_place);
            }
        }
        if subject.is_empty() {
            // Only a place or a time: "at night" -> 夜晚, "on the beach" -> 在沙滩上.
            out.push_str(before.trim_end_matches('的'));
            out.push_str(&after);
        } else {
            out.push_str(&before);
            out.push_str(&subject);
            out.push_str(&after);
        }
    }
    out
}
