#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/golden.jsonl: HF BertTokenizer ids for every corpus line.

Needs `pip install transformers tokenizers` (no torch). The tokenizer is built the way the spec
says gives the right ids: `BertTokenizer.from_pretrained(<folder holding vocab.txt>)` (in
transformers 5.x, `BertTokenizer(vocab_file=...)` silently yields all [UNK]). The vocabulary is
tests/fixtures/tokenizer/vocab.txt (a copy of shared/vocab/zh-bert-vocab.txt), copied into a
temporary folder as vocab.txt.

Each output line is one JSON object for the corpus line of the same number:
    {"line": 1-based line number, "text": the decoded string,
     "ids32": ids at L=32, "real32": attention-mask sum at L=32,
     "ids80"/"real80": the same at L=80, only for every 4th line and for lines with more
                       than 30 wordpieces}
L=N means tokenizer(text, max_length=N, truncation=True, padding="max_length").

Usage: python3 tests/reference/make_tokenizer_golden.py
"""

import hashlib
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer"
VOCAB_SHA256 = "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c"

_ESCAPE = re.compile(r"\\(\\|t|n|r|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})")
_SIMPLE = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}


def unescape(line: str) -> str:
    """Decodes corpus.txt's escapes (see make_tokenizer_corpus.py)."""

    def sub(m: re.Match) -> str:
        e = m.group(1)
        return _SIMPLE[e] if e in _SIMPLE else chr(int(e[1:], 16))

    out = _ESCAPE.sub(sub, line)
    # A backslash that starts no known escape would make the Rust decoder panic: refuse it here.
    if "\\" in _ESCAPE.sub("", line):
        raise ValueError(f"unknown escape in corpus line: {line!r}")
    return out


def read_corpus() -> list[str]:
    raw = (FIXTURES / "corpus.txt").read_text(encoding="utf-8")
    if raw.endswith("\n"):
        raw = raw[:-1]
    return raw.split("\n")


def main() -> None:
    import transformers
    from transformers import BertTokenizer

    vocab = FIXTURES / "vocab.txt"
    digest = hashlib.sha256(vocab.read_bytes()).hexdigest()
    if digest != VOCAB_SHA256:
        sys.exit(f"{vocab} has sha256 {digest}, expected {VOCAB_SHA256}")

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(vocab, Path(tmp) / "vocab.txt")
        tok = BertTokenizer.from_pretrained(tmp)

    def encode(text: str, n: int) -> tuple[list[int], int]:
        e = tok(text, max_length=n, truncation=True, padding="max_length")
        ids, mask = list(e["input_ids"]), list(e["attention_mask"])
        assert len(ids) == n and len(mask) == n
        return ids, sum(mask)

    # The spec's example; stops a broken tokenizer (e.g. all [UNK]) from writing a golden file.
    want = [101, 671, 1372, 4344, 13030, 8377, 102] + [0] * 25
    got, _ = encode("一只猫 Dog Café", 32)
    if got != want:
        sys.exit(f"tokenizer self-check failed: {got}")

    lines = read_corpus()
    out_path = FIXTURES / "golden.jsonl"
    n80 = 0
    with open(out_path, "w", encoding="utf-8", newline="\n") as f:
        for i, src in enumerate(lines):
            text = unescape(src)
            rec = {"line": i + 1, "text": text}
            rec["ids32"], rec["real32"] = encode(text, 32)
            pieces = len(tok(text, add_special_tokens=False)["input_ids"])
            if i % 4 == 0 or pieces > 30:
                rec["ids80"], rec["real80"] = encode(text, 80)
                n80 += 1
            f.write(json.dumps(rec, ensure_ascii=True, separators=(",", ":")) + "\n")
    print(
        f"wrote {len(lines)} lines ({n80} also at L=80) to {out_path} "
        f"with transformers {transformers.__version__}, {type(tok).__name__}"
    )


if __name__ == "__main__":
    main()
