#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/corpus.txt, the tokenizer's golden-test corpus.

Deterministic (fixed seed, standard library only): running it again gives the same bytes.

One test string per line. So that tabs, newlines, control characters and odd spaces survive
editors and git, every character below is written as an escape and everything else as UTF-8:
    \\\\ -> backslash   \\t \\n \\r   \\xHH   \\uHHHH   \\UHHHHHHHH
escaped: the backslash, every character of Unicode category C* (Cc, Cf, Co, Cn) or Z* (Zs, Zl, Zp)
other than a plain inner space, spaces at either end of a line, and the lone combining marks
that would otherwise attach to the character before them in an editor. make_tokenizer_golden.py
and the Rust test decode the same escapes.

Usage: python3 tests/reference/make_tokenizer_corpus.py
"""

import random
import unicodedata
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "tokenizer" / "corpus.txt"

ZH_PHRASES = [
    "海边的日落", "一只猫在沙发上睡觉", "雪山下的湖泊", "生日蛋糕和蜡烛", "夜晚的城市天际线",
    "下雨天的街道", "金毛犬在草地上奔跑", "小女孩放风筝", "秋天的枫叶", "樱花盛开的公园",
    "长城上的游客", "西湖的荷花", "一碗热腾腾的拉面", "火锅", "北京烤鸭", "红烧肉和米饭",
    "海滩上的椰子树", "沙漠中的骆驼", "星空下的帐篷", "瀑布和彩虹", "老人在公园里下棋",
    "婚礼上的新娘", "毕业典礼合影", "春节放鞭炮", "中秋节的月饼", "端午节赛龙舟",
    "地铁站里的人群", "故宫的红墙", "上海外滩夜景", "桂林山水", "黄山云海", "熊猫吃竹子",
    "穿红色衣服的女人", "戴眼镜的男人", "宝宝的第一步", "厨房里做饭的妈妈", "爸爸和儿子钓鱼",
    "一杯咖啡和一本书", "窗外的雪景", "荷塘月色", "日出时的海面", "蓝天白云",
    "草原上的马群", "古镇的小桥流水", "满天繁星", "晚霞", "向日葵花田", "薰衣草",
    "我和朋友在海边", "去年夏天在三亚拍的照片", "两只小狗在玩耍", "白色的猫咪", "黑猫",
    "一辆红色的跑车", "自行车停在路边", "飞机在云层之上", "高铁", "港口的轮船",
    "足球比赛", "篮球场", "游泳池", "滑雪", "登山的人", "跑马拉松",
    "我的自拍", "全家福", "聚餐", "烧烤派对", "圣诞树", "万圣节南瓜灯",
    "蝴蝶停在花上", "小鸟在树枝上唱歌", "金鱼", "水母", "海豚跳出水面", "大象",
    "雨后的彩虹", "闪电", "大雾中的森林", "结冰的河面", "竹林小径", "寺庙",
    "东方明珠", "天安门广场", "布达拉宫", "兵马俑", "鼓浪屿", "张家界",
    "手写的信", "旧照片", "黑白照片", "老房子", "胡同", "四合院",
    "图书馆里看书的学生", "实验室", "医院", "超市货架", "菜市场", "夜市小吃",
    "猫和狗", "紅燒獅子頭", "臺灣的夜市", "香港維多利亞港", "澳門大三巴", "廣州塔",
    "一隻貓在睡覺", "風景", "電腦和鍵盤", "咖啡廳",
]

EN_PHRASES = [
    "sunset at the beach", "a cat sleeping on the sofa", "Snowy mountains and a lake",
    "birthday cake with candles", "city skyline at night", "rainy street", "golden retriever",
    "kids flying a kite", "Autumn leaves", "cherry blossoms in the park", "The Great Wall",
    "bowl of ramen", "hot pot", "Peking duck", "palm trees", "camel in the desert",
    "tent under the stars", "waterfall and rainbow", "wedding photo", "graduation ceremony",
    "Chinese New Year fireworks", "mooncakes", "dragon boat race", "subway crowd",
    "Forbidden City", "Shanghai Bund at night", "panda eating bamboo", "woman in a red dress",
    "man with glasses", "baby's first steps", "cooking in the kitchen", "father and son fishing",
    "coffee and a book", "snow outside the window", "sunrise over the sea", "blue sky",
    "horses on the grassland", "DOG", "Dog", "dogs", "cats", "puppies playing", "selfie",
    "family photo", "BBQ party", "Christmas tree", "Halloween pumpkin", "butterfly on a flower",
    "dolphin jumping", "elephant", "lightning storm", "foggy forest", "frozen river",
    "old photos", "black and white", "library", "supermarket", "night market street food",
    "don't forget", "it's a dog's life", "rock'n'roll", "e-mail", "state-of-the-art",
    "U.S.A.", "Dr. Smith", "Mt. Everest", "New York City", "San Francisco", "Los Angeles",
    "unbelievably", "photographs", "photography", "internationalization", "antidisestablishmentarianism",
    "pneumonoultramicroscopicsilicovolcanoconiosis", "xylophone", "quizzical", "zzz",
    "iPhone", "iPad Pro", "MacBook", "PlayStation", "WeChat", "TikTok", "YouTube", "GoPro",
]

DIGITS = [
    "2023年5月1日", "2019-08-15", "12:30", "3.14159", "1,000,000", "100%", "No.1", "iPhone 14 Pro",
    "5kg", "24h", "1080p", "4K", "f/1.8", "ISO 3200", "1/250s", "35mm", "50mm f/1.4", "+86 138 0013 8000",
    "第3张", "第100天", "3个人", "2只猫", "10岁生日", "0", "007", "123456789012345678901234567890",
    "3.0.1", "v2", "Q4", "A4纸", "5G", "24K金", "18:00-20:00", "¥99", "$5.99", "€20", "£3",
    "1st", "2nd", "3rd", "4th", "1990s", "80后", "90后", "双11", "12306", "110", "½", "²", "Ⅻ",
    "①②③", "㈠", "一二三", "壹贰叁", "٣٤٥", "३४५",
]

FULLWIDTH = [
    "ＡＢＣ１２３，！", "ｈｅｌｌｏ　ｗｏｒｌｄ", "ＤＯＧ", "１２３４５", "（括号）", "【标题】", "！？。，、；：",
    "“引号”", "‘单引号’", "《书名》", "〈小〉", "「日本語」", "『二重』", "……", "——", "～", "＠＃＄％＾＆＊",
    "ｶﾀｶﾅ", "ｶﾞｷﾞｸﾞ", "ﾊﾟﾝ", "￥１００", "＋－×÷＝", "ｉＰｈｏｎｅ", "ＯＫ", "Ｗｉ－Ｆｉ",
]

EMOJI = [
    "😀", "🐱", "🐶", "🌅", "❤️", "❤", "👍", "👍🏽", "👨‍👩‍👧", "🏳️‍🌈", "🇨🇳", "🇺🇸", "🥰", "🫠", "🪿",
    "🤖", "🎉🎂🎁", "☀️", "⭐", "✨", "🔥", "💯", "🙏", "😂😂😂", "🍜", "🍣", "🏖️", "🗻", "🌸",
    "#️⃣", "1️⃣", "©", "®", "™", "♥", "☺", "✔", "→", "★", "☆", "♪", "🀄", "🎎",
]

ACCENTED = [
    "Café", "café", "CAFÉ", "naïve", "Ångström", "Crème brûlée", "São Paulo", "Zürich",
    "Ærøskøbing", "Łódź", "İstanbul", "ıi", "ΟΔΟΣ", "Σίσυφος", "οδός", "Straße", "STRASSE",
    "ǅungla", "ﬁne", "ﬂower", "Ĳssel", "résumé", "Résumé", "façade", "jalapeño", "Pokémon",
    "Mötley Crüe", "Dvořák", "Ελληνικά", "Москва", "МОСКВА", "Ёлка", "Україна", "עברית",
    "العربية", "हिन्दी", "ไทย", "Tiếng Việt", "Hà Nội", "Phở", "e\u0301", "E\u0301\u0302",
    "a\u0308", "n\u0303", "Å", "Å", "ﬀ", "𝐀𝐁𝐂", "𝓗𝓮𝓵𝓵𝓸", "ℌ", "Ⓐ", "ⓐ",
]

JAPANESE = [
    "ひらがな", "カタカナ", "東京タワー", "富士山", "さくら", "ありがとう", "こんにちは",
    "ラーメン", "すし", "がぎぐげご", "パピプペポ", "ヴ", "ー", "ゝゞヽヾ", "猫が好き",
    "写真を撮る", "京都の紅葉", "日本の夏", "おにぎり", "コーヒー",
]

KOREAN = [
    "서울의 야경", "한국어", "안녕하세요", "김치", "부산 바다", "사진", "고양이", "강아지",
    "ㄱㄴㄷ", "ㅏㅑㅓ", "한글", "감사합니다",
]

PUNCT = [
    "!!!???...", "——", "……", "《》", "「」", "(*^▽^*)", "~~~", "@#$%^&*", "---", "a.b.c",
    "https://example.com/a?b=1&c=2#frag", "user@example.com", "C:\\Users\\photo.jpg", "/home/me/pics",
    "#hashtag", "@mention", "[tag]", "{json: 1}", "<html>", "a/b/c", "1+1=2", "50% off!",
    "\"quoted\"", "'single'", "`backtick`", "a_b_c", "snake_case_name", "CamelCaseName",
    "?!", "¿Qué?", "¡Hola!", "«guillemets»", "„German“", "‹›", "†‡", "§¶", "•·", "°C", "℃",
    "…", "‰", "‽", "※", "〃", "々", "〆", "〇", "ー", "・", "｜", "¦", "^_^", ">_<", "T_T", "o(╥﹏╥)o",
    "====", "____", "****", "####", "$$$$", "%%%%", "&&&&", "||||", "\\\\\\\\",
]

SPECIAL = [
    "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]", "[mask]", "[Mask]", "[CLS]猫[SEP]", "a[SEP]b",
    "猫[MASK]狗", "[unused1]", "[unused99]", "<S>", "<T>", "[ CLS ]", "[[MASK]]", "##", "##s",
    "##猫", "[PAD][PAD][PAD]", "[UNK]100",
]

CONTROL = [
    "\t", "\n", "\r\n", "\r", "\x00", "\x07", "\x1b[31mred\x1b[0m", "\u200b", "\u00a0", "\u3000",
    "\u2028", "\u2029", "\ufeff", "\ufffd", "\u00ad", "\u0085", "\x7f", "\ue000", "\u0378",
    "\u0301", "\u200d", "\u200c", "\u2060", "\u202e", "\x0b", "\x0c", "\x1c", "\x1f", "\u180e",
    "\u2000", "\u200a", "\u205f", "\U000e0001", "\U000f0000", "\U0010fffd",
]

# CJK ranges BERT splits into single characters, with their edges and the 0x2B820..0x2B91F range
# that the Python BasicTokenizer counts as Chinese and tokenizers' BertNormalizer does not.
CJK_EDGES = [
    0x4E00, 0x9FFF, 0x9FA5, 0x3400, 0x4DBF, 0x20000, 0x2A6DF, 0x2A700, 0x2B73F, 0x2B740,
    0x2B81F, 0x2B820, 0x2B8FF, 0x2B91F, 0x2B920, 0x2CEAF, 0xF900, 0xFAFF, 0x2F800, 0x2FA1F,
    0x3007, 0x2E80, 0x2F00, 0x31C0, 0x3100, 0x30000,
]

SEPS = [" ", "", "，", ", ", "  ", "\t", "、", " - ", "/", "。", "\n", "！", " & ", "的"]

POOLS = [ZH_PHRASES, EN_PHRASES, DIGITS, FULLWIDTH, EMOJI, ACCENTED, JAPANESE, KOREAN, PUNCT,
         SPECIAL, CONTROL]
WEIGHTS = [30, 20, 10, 6, 6, 8, 5, 4, 6, 2, 3]


def escape(s: str) -> str:
    out = []
    for i, ch in enumerate(s):
        cp = ord(ch)
        cat = unicodedata.category(ch)
        edge_space = ch == " " and (i == 0 or i == len(s) - 1)
        lone_mark = cat.startswith("M") and (i == 0 or s[i - 1] in " \t\n\r")
        if ch == "\\":
            out.append("\\\\")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif edge_space or lone_mark or (cat[0] in "CZ" and ch != " "):
            if cp < 0x100:
                out.append(f"\\x{cp:02x}")
            elif cp < 0x10000:
                out.append(f"\\u{cp:04x}")
            else:
                out.append(f"\\U{cp:08x}")
        else:
            out.append(ch)
    return "".join(out)


def random_scalar(rng: random.Random) -> str:
    """A random Unicode scalar value (never a surrogate), weighted toward interesting blocks."""
    blocks = [
        (0x20, 0x7F), (0x80, 0x24F), (0x250, 0x36F), (0x370, 0x52F), (0x590, 0x6FF),
        (0x900, 0xDFF), (0x1100, 0x11FF), (0x1E00, 0x1FFF), (0x2000, 0x2BFF), (0x2E80, 0x2FDF),
        (0x3000, 0x30FF), (0x3100, 0x33FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xA000, 0xABFF),
        (0xAC00, 0xD7A3), (0xE000, 0xE0FF), (0xF900, 0xFAFF), (0xFB00, 0xFFFF),
        (0x10000, 0x1FFFF), (0x1F300, 0x1FAFF), (0x20000, 0x2FA1F), (0x30000, 0x3134F),
        (0xE0000, 0xE01EF),
    ]
    lo, hi = rng.choice(blocks)
    cp = rng.randint(lo, hi)
    if 0xD800 <= cp <= 0xDFFF:
        cp = 0xFFFD
    return chr(cp)


def main() -> None:
    rng = random.Random(20261123)
    lines: list[str] = []

    # 1. Every pool entry on its own line, as is.
    for pool in POOLS:
        lines.extend(pool)
    lines.extend(chr(cp) for cp in CJK_EDGES)
    lines.append("".join(chr(cp) for cp in CJK_EDGES))

    # 2. Hand-written cases: the spec example, empty-ish lines, length edges.
    lines += [
        "一只猫 Dog Café",
        "", " ", "  ", "\t", " \t \n ", "\x00", "\u200b", "\u3000\u3000", "\ufeff\ufeff", ".", "猫",
        "a" * 100, "a" * 101, "A" * 99, "x" * 300, "猫" * 30, "猫" * 31, "猫" * 32, "猫" * 78,
        "猫" * 79, "猫" * 80, "猫" * 200, "dog " * 29, "dog " * 30, "dog " * 31, "dog " * 100,
        "ab" * 50 + "c", "é" * 101, "😀" * 40, "!" * 40, "1" * 150, "1 " * 90,
        "我们在海边看日落，天空从金黄色慢慢变成了粉红色，海浪轻轻拍打着沙滩，远处有几艘渔船正在返航，"
        "孩子们在沙滩上堆沙堡，小狗追着海鸥跑来跑去，这是一个非常美好的夏日傍晚，我拍了很多照片留作纪念。",
        "A long English caption about a family trip to the mountains where we hiked for hours, "
        "saw waterfalls, wild flowers, a herd of goats, ate sandwiches by the lake and watched the "
        "sun go down behind the peaks before driving back home late at night.",
        "混合 mixed 文本 text 和 and 数字 123 以及 emoji 😀 还有 accents Café naïve 以及 ＦＵＬＬ width，"
        "标点！？还有更多更多的内容 to make it longer than eighty tokens 一二三四五六七八九十 "
        "甲乙丙丁戊己庚辛壬癸 子丑寅卯辰巳午未申酉戌亥 the end.",
        "Line one\nLine two\r\nLine three\tTabbed\x00Nul\u200bZWSP\u3000Ideographic",
        "\ttabs\tbetween\twords\t", "\n\n\n猫\n\n\n", "猫\r\n狗", " leading and trailing ",
    ]

    # 3. Deterministic random mixes from the pools, short to very long.
    def phrase() -> str:
        pool = rng.choices(POOLS, weights=WEIGHTS)[0]
        return rng.choice(pool)

    while len(lines) < 1000:
        kind = rng.random()
        if kind < 0.55:
            n = rng.randint(1, 4)
        elif kind < 0.85:
            n = rng.randint(5, 12)
        else:
            n = rng.randint(13, 40)
        parts = [phrase() for _ in range(n)]
        text = parts[0]
        for p in parts[1:]:
            text += rng.choice(SEPS) + p
        if rng.random() < 0.1:
            text = text.upper()
        lines.append(text)

    # 4. Random code points: fuzz lines over many blocks (no surrogates).
    for _ in range(120):
        n = rng.randint(1, 60)
        chars = []
        for _ in range(n):
            chars.append(" " if rng.random() < 0.15 else random_scalar(rng))
        lines.append("".join(chars))

    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(escape(line) + "\n")
    print(f"wrote {len(lines)} lines to {OUT}")


if __name__ == "__main__":
    main()
