#!/usr/bin/env python3
"""Writes tests/data/tokenizer/corpus.txt: the tokenizer test corpus (one test case per line).

Deterministic (fixed seed). Lines are separated by '\n' only; they never contain '\n'.
Characters on which the JS reference (transformers.js) and HF tokenizers (Rust/Oniguruma)
disagree are left out on purpose: U+0085, U+FEFF, U+180E, U+2028/U+2029 (JS \\s differs from
Unicode White_Space), and U+017F / U+212A after an apostrophe (JS spells (?i:'s) as [sS]).
'\r' only appears inside lines.

Usage: python3 tests/reference/make_corpus.py  (from the repository root)
"""
import os
import random

OUT = os.path.join(os.path.dirname(__file__), "..", "data", "tokenizer", "corpus.txt")
rng = random.Random(20240607)

PROSE = [
    "Once upon a time, there was a little girl named Lily.",
    "She loved to play outside in the sunshine with her big red ball.",
    "The quick brown fox jumps over the lazy dog.",
    "Tom and his mom went to the park. They saw a big tree and a small bird.",
    "\"Can I have a cookie?\" asked Ben. His dad smiled and said, \"Yes, you can.\"",
    "It was a sunny day, and the children were happy to be at the beach.",
    "Machine learning models are trained on large amounts of text data.",
    "The KV cache is paged, spread across attention workers, and compressed per head.",
    "Please summarize the following article in three sentences or fewer.",
    "In 1969, Neil Armstrong became the first person to walk on the Moon.",
    "The mitochondria is the powerhouse of the cell.",
    "I can't believe it's already 5 o'clock; we're going to be late!",
    "Why don't you come over tonight? We'll watch a movie and I'd make popcorn.",
    "You've got to be kidding me -- that's not what I meant at all...",
    "Dr. Smith, Ph.D., arrived at 10:45 a.m. on Jan. 3rd, 2021.",
    "e.g. the U.S.A. and the U.K. signed the treaty (see p. 42, fn. 7).",
    "Once the model finishes its prefill, the scheduler admits the next request.",
    "the end.", "THE END.", "Hello, world!", "hello world", "HELLO WORLD",
]

CONTRACTIONS = [
    "it's", "IT'S", "It'S", "don't", "DON'T", "Don'T", "they're", "THEY'RE", "they'RE",
    "we've", "WE'VE", "I'm", "I'M", "we'll", "WE'LL", "We'Ll", "she'd", "SHE'D",
    "'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'T", "'RE", "'VE", "'M", "'LL", "'D",
    "rock'n'roll", "o'clock", "y'all'd've", "'quoted'", "''double''", "it''s", "'", "''",
    "the dog's bone", "the dogs' bones", "James's book", "'tis", "'twas", "ma'am",
]

ACCENTS = [
    "café", "naïve", "résumé", "façade", "Ångström", "Zürich", "São Paulo", "Ærøskøbing",
    "crème brûlée", "piñata", "jalapeño", "Dvořák", "Łódź", "İstanbul", "ıi", "Straße",
    "ﬁnance ﬂow", "Ｆｕｌｌｗｉｄｔｈ", "ｈａｌｆ ｋａｔａｋａｎａ ｶﾀｶﾅ", "e\u0301 (combining acute)",
    "n\u0303o", "A\u030a", "Ω≈ç√∫˜µ≤≥÷", "¡¿", "«guillemets»", "„Anführungszeichen“",
]

CJK = [
    "你好，世界！", "我爱自然语言处理。", "今天天气很好，我们去公园散步吧。",
    "こんにちは、世界。", "東京は日本の首都です。", "カタカナとひらがな", "ｶﾞｷﾞｸﾞ",
    "안녕하세요, 세계!", "한국어 토크나이저 테스트", "中文English混合mixed文本",
    "《红楼梦》是中国古典小说。", "数字１２３４５和123", "　全角スペース　",
    "龘靐齉", "𠀀𠀁𠀂 (CJK Extension B)",
]

SCRIPTS = [
    "Привет, мир! Как дела?", "Съешь же ещё этих мягких французских булок.",
    "مرحبا بالعالم", "اللغة العربية جميلة", "שלום עולם", "नमस्ते दुनिया", "हिन्दी भाषा",
    "Γειά σου Κόσμε", "ΑΒΓΔ αβγδ", "გამარჯობა", "Բարեւ", "สวัสดีครับ", "ສະບາຍດີ",
    "வணக்கம்", "ನಮಸ್ಕಾರ", "বাংলা ভাষা", "ሰላም", "ᚠᚢᚦᚨᚱᚲ", "Tiếng Việt có dấu",
    "Xin chào thế giới", "Merhaba dünya", "Cześć świecie", "Ahoj světe", "Olá mundo",
]

EMOJI = [
    "😀", "😂🤣", "👍", "👍🏽", "👍🏿", "❤️", "❤", "🔥🔥🔥", "🎉 party 🎉", "🙂 smile",
    "👨‍👩‍👧‍👦", "👩‍💻", "🧑🏽‍🚀", "🏳️‍🌈", "🏴‍☠️", "👁️‍🗨️", "🇺🇸", "🇯🇵🇰🇷🇨🇳",
    "🇫🇷🇩🇪🇮🇹", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "1️⃣2️⃣3️⃣", "#️⃣", "©️®️™️", "☕", "⌚⌛", "🫠🫶", "🦀 rust",
    "🐍 python", "🤖 robot", "emoji🙂inside🙂words",
]

CODE = [
    "int main(int argc, char** argv) { return 0; }",
    "#include <vector>",
    "std::vector<int32_t> ids = tokenizer->Encode(text, /*add_bos=*/true).value();",
    "for (size_t i = 0; i < n; ++i) { sum += a[i] * b[i]; }",
    "template <typename T> T max(T a, T b) { return a > b ? a : b; }",
    "if (!status.ok()) return status;  // propagate",
    "auto [it, inserted] = map.emplace(key, value);",
    "def fibonacci(n):",
    "    if n < 2:",
    "        return n",
    "    return fibonacci(n - 1) + fibonacci(n - 2)",
    "print(f\"{name!r}: {value:>10.3f}\")",
    "lambda x: x ** 2 if x >= 0 else -x",
    "import numpy as np; x = np.zeros((3, 4), dtype=np.float32)",
    "{\"model\": \"llama\", \"temperature\": 0.7, \"max_tokens\": 128, \"stream\": true}",
    "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi!\"}]}",
    "[1, 2, 3, {\"a\": null, \"b\": [true, false]}]",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
    "<html><body><p class=\"x\">Hello &amp; goodbye</p></body></html>",
    "$ ./build/bin/kvasir serve --model ../shared/models/stories260K --port 8080",
    "git commit -m \"fix: off-by-one in page table\" && git push origin main",
    "x=1;y=2;z=x+y;echo $((z*3))",
    "0x7fffffff 0xDEADBEEF 0b1010 1e-9 3.14159e+10 -0.0",
    "a->b->c; a.b.c; a::b::c; a=>b; a!=b; a==b; a<=b; a>=b; a&&b; a||b",
    "/* block comment */ // line comment",
    "\tindented with a tab", "\t\tdouble tab", "    four spaces", "        eight spaces",
    "path/to/file.txt C:\\Windows\\System32 ~/.config/kvasir.toml",
    "https://example.com/path?query=1&other=two#frag",
    "user@example.com",
]

SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>",
    "<|end_header_id|>", "<|reserved_special_token_0|>", "<|reserved_special_token_250|>",
    "<|finetune_right_pad_id|>", "<|python_tag|>", "<s>", "</s>", "<unk>",
    "<|begin_of_text", "begin_of_text|>", "<|unknown_special|>", "< s>", "<<s>>", "<s><s>",
    "</s></s>", "<|eot_id|><|eot_id|>", "<0x41>", "<0xFF>", "<pad>", "[INST]", "[/INST]",
    "<<SYS>>", "<</SYS>>",
]

PUNCT = [
    "!!!", "???", "?!?!", "...", "…", "---", "—", "–", ",,,", ";;", "::", "((()))", "[[]]",
    "{{}}", "<<>>", "~~~", "```", "'''", "\"\"\"", "***", "___", "###", "@@@", "$$$", "%%%",
    "^^^", "&&&", "|||", "\\\\\\", "///", "+-*/=", "<=>", "!=", "•", "·", "§¶", "†‡", "°C",
    "½ ¼ ¾", "№", "€100", "£5", "¥1000", "₹500", "₿", "™", "©", "®",
]

WHITESPACE = [
    " ", "  ", "   ", "    ", "\t", "\t\t", " \t ", "\u00a0", "\u00a0\u00a0", "\u3000",
    "\u2003", "\u2009", "\u200b", "\u202f", "\u205f", " \r ", "\x0b", "\x0c",
]

WORDS = ("the of and to in is was for on that with as by at from it be this are or an had "
         "not but what all were when we there can been has more if will one about up out "
         "them then she many some so these would other into has her two like him see time "
         "could no make than first been its who now people my made over did down only way "
         "find use may water long little very after words called just where most know "
         "tokenizer attention decoder router cache sequence prefill sampling batch").split()


def number(r):
    k = r.randint(1, 25)
    s = "".join(r.choice("0123456789") for _ in range(k))
    if r.random() < 0.3:
        s = f"{int(s):,}"
    if r.random() < 0.2:
        s += "." + "".join(r.choice("0123456789") for _ in range(r.randint(1, 6)))
    if r.random() < 0.1:
        s = "-" + s
    return s


def word(r):
    w = r.choice(WORDS)
    x = r.random()
    if x < 0.1:
        return w.upper()
    if x < 0.25:
        return w.capitalize()
    return w


def sentence(r):
    n = r.randint(3, 18)
    parts = []
    for _ in range(n):
        x = r.random()
        if x < 0.70:
            parts.append(word(r))
        elif x < 0.78:
            parts.append(number(r))
        elif x < 0.84:
            parts.append(r.choice(CONTRACTIONS))
        elif x < 0.88:
            parts.append(r.choice(PUNCT))
        elif x < 0.91:
            parts.append(r.choice(EMOJI))
        elif x < 0.94:
            parts.append(r.choice(ACCENTS))
        elif x < 0.97:
            parts.append(r.choice(SCRIPTS + CJK))
        else:
            parts.append(r.choice(SPECIALS))
    out = ""
    for i, p in enumerate(parts):
        if i:
            out += r.choice([" "] * 12 + ["", "  ", "\t", ", ", ". ", "\u00a0", "-"])
        out += p
    return out


def mixed(r):
    pools = [PROSE, CONTRACTIONS, ACCENTS, CJK, SCRIPTS, EMOJI, CODE, SPECIALS, PUNCT]
    n = r.randint(1, 6)
    out = ""
    for i in range(n):
        if i:
            out += r.choice(WHITESPACE + [" "] * 10 + ["", ""])
        out += r.choice(r.choice(pools))
    return out


def decorate(r, s):
    """Leading/trailing whitespace and case variants."""
    x = r.random()
    if x < 0.08:
        s = r.choice(WHITESPACE) * r.randint(1, 3) + s
    elif x < 0.16:
        s = s + r.choice(WHITESPACE) * r.randint(1, 3)
    elif x < 0.20:
        s = s.upper()
    elif x < 0.22:
        s = s.lower()
    return s


def main():
    lines = []
    # Every fixed fragment alone, then with a leading space, then with surrounding text.
    for pool in [PROSE, CONTRACTIONS, ACCENTS, CJK, SCRIPTS, EMOJI, CODE, SPECIALS, PUNCT]:
        for s in pool:
            lines.append(s)
            lines.append(" " + s)
            lines.append("a" + s + "b")
    # Edge cases.
    lines += [
        "", " ", "  ", "\t", " \t", "a", "A", " a", "a ", "  a  ", "1", "12", "123", "1234",
        "12345", "123456789012345678901234567890", "3.14159265358979323846264338327950288",
        "1,000,000", "-42", "+1 (555) 123-4567", "2024-06-07T12:34:56Z", "v1.2.3-rc.4",
        "a\tb\tc", "a  b   c    d", "trailing spaces   ", "   leading spaces",
        "tab\tand\u00a0nbsp", "x" * 300, "ab" * 200, " " * 64, "\t" * 16, "!" * 100,
        "😀" * 30, "🇺🇸" * 10, "の" * 50, "9" * 100, "a1b2c3d4e5", "ABCdefGHI", "camelCaseWord",
        "snake_case_word", "kebab-case-word", "SCREAMING_SNAKE", "mIxEd CaSe",
        "<|begin_of_text|>Hello", "Hello<|end_of_text|>", "<|begin_of_text|><|begin_of_text|>",
        "<s>Hello</s>", "<s> Hello </s>", "text <s> in the middle </s> of text",
        "<|start_header_id|>user<|end_header_id|>\n".rstrip("\n") + " Hi<|eot_id|>",
        "a\rb", "x \r y",
        "\u200bzero\u200bwidth\u200bspace", "soft\u00adhyphen", "word\u2060joiner",
        "left\u200eto\u200fright", "\U0001F600\U0001F601\U0001F602", "\u00e9\u0065\u0301",
    ]
    # Random lines to reach well over 2,000.
    while len(lines) < 2600:
        x = rng.random()
        if x < 0.45:
            s = sentence(rng)
        elif x < 0.85:
            s = mixed(rng)
        else:
            s = " ".join(sentence(rng) for _ in range(rng.randint(3, 12)))
        lines.append(decorate(rng, s))
    for s in lines:
        assert "\n" not in s
        for bad in "\u0085\ufeff\u180e\u2028\u2029":
            assert bad not in s, (bad, s)
        assert not s.endswith("\r"), s
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8", newline="\n") as f:
        for s in lines:
            f.write(s + "\n")
    print(f"wrote {len(lines)} lines to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
