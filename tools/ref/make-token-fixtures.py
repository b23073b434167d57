#!/usr/bin/env python3
"""Reference tokenizations for our tokenizer tests: the strings in CASES below tokenized and
detokenized by llama.cpp (through llama-cpp-python), an implementation independent of ours.

Rerun (deterministic for a given llama.cpp version; commit what changes):
    tools/ref/llama-cpp.sh                          # once: builds the venv (see that script)
    tools/fetch-model.sh && tools/fetch-model.sh qwen2.5-coder-0.5b
    ${SPOTLIGHT_MODELS:-~/.cache/spotlight}/llama-cpp/venv/bin/python tools/ref/make-token-fixtures.py

Writes tests/fixtures/tokens-<model>.tsv for each model in MODELS. Lines starting with '#' are
comments (the first ones name the llama.cpp version and the model). Other lines are records,
fields separated by one TAB, no field ever empty ('-' stands for an empty byte string or an
empty id list), bytes always lowercase hex so any input (tabs, newlines, invalid UTF-8) fits:

    tok    NAME  SPECIAL  INPUT_HEX  IDS  DETOK_HEX
        NAME       [a-z0-9_]+, unique per (NAME, SPECIAL)
        SPECIAL    0: special-token text is ordinary text; 1: it is parsed into special tokens
                   (llama_tokenize's parse_special)
        INPUT_HEX  the UTF-8 input bytes
        IDS        token ids separated by single spaces, from
                   llama_tokenize(add_special=true, parse_special=SPECIAL); both models' GGUF
                   metadata say add_bos_token=false, so no BOS is prepended
        DETOK_HEX  llama_detokenize(IDS, remove_special=false, unparse_special=true)
    piece  ID    SPECIAL  PIECE_HEX  ATTR
        PIECE_HEX  llama_token_to_piece(ID, lstrip=0, special=SPECIAL): raw bytes, so a piece
                   can be a fragment of a UTF-8 sequence; control tokens give '-' when SPECIAL=0
        ATTR       llama_vocab_get_attr(ID), the llama_token_attr bit mask (llama.h): 1 unknown,
                   2 unused, 4 normal, 8 control, 16 user-defined, 32 byte, 64 normalized,
                   128 lstrip, 256 rstrip, 512 single-word
The piece sample is ids 0..127, every 1009th id, the last 64 ids, and bos/eos.
"""
import ctypes
import os
import sys

try:
    import llama_cpp
except ImportError:
    sys.exit("needs the llama.cpp venv: run tools/ref/llama-cpp.sh and use its venv/bin/python")

from refpaths import FIXTURES, MODELS, cache_dir  # noqa: E402 (sibling module)

LONG_TEXT = (
    # Gettysburg Address (1863) and the opening of the Declaration of Independence (1776);
    # public domain. About 500 words of ordinary English prose.
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, "
    "conceived in Liberty, and dedicated to the proposition that all men are created equal.\n\n"
    "Now we are engaged in a great civil war, testing whether that nation, or any nation so "
    "conceived and so dedicated, can long endure. We are met on a great battle-field of that war. "
    "We have come to dedicate a portion of that field, as a final resting place for those who "
    "here gave their lives that that nation might live. It is altogether fitting and proper that "
    "we should do this.\n\n"
    "But, in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow -- "
    "this ground. The brave men, living and dead, who struggled here, have consecrated it, far "
    "above our poor power to add or detract. The world will little note, nor long remember what "
    "we say here, but it can never forget what they did here. It is for us the living, rather, "
    "to be dedicated here to the unfinished work which they who fought here have thus far so "
    "nobly advanced. It is rather for us to be here dedicated to the great task remaining before "
    "us -- that from these honored dead we take increased devotion to that cause for which they "
    "gave the last full measure of devotion -- that we here highly resolve that these dead shall "
    "not have died in vain -- that this nation, under God, shall have a new birth of freedom -- "
    "and that government of the people, by the people, for the people, shall not perish from the "
    "earth.\n\n"
    "When in the Course of human events, it becomes necessary for one people to dissolve the "
    "political bands which have connected them with another, and to assume among the powers of "
    "the earth, the separate and equal station to which the Laws of Nature and of Nature's God "
    "entitle them, a decent respect to the opinions of mankind requires that they should declare "
    "the causes which impel them to the separation.\n\n"
    "We hold these truths to be self-evident, that all men are created equal, that they are "
    "endowed by their Creator with certain unalienable Rights, that among these are Life, Liberty "
    "and the pursuit of Happiness.--That to secure these rights, Governments are instituted among "
    "Men, deriving their just powers from the consent of the governed, --That whenever any Form "
    "of Government becomes destructive of these ends, it is the Right of the People to alter or "
    "to abolish it, and to institute new Government, laying its foundation on such principles "
    "and organizing its powers in such form, as to them shall seem most likely to effect their "
    "Safety and Happiness. Prudence, indeed, will dictate that Governments long established "
    "should not be changed for light and transient causes; and accordingly all experience hath "
    "shewn, that mankind are more disposed to suffer, while evils are sufferable, than to right "
    "themselves by abolishing the forms to which they are accustomed. But when a long train of "
    "abuses and usurpations, pursuing invariably the same Object evinces a design to reduce them "
    "under absolute Despotism, it is their right, it is their duty, to throw off such "
    "Government, and to provide new Guards for their future security.\n"
)

C_CODE = (
    "#include <stdio.h>\n\n"
    "static int add(int a, int b) { return a + b; }\n\n"
    "int main(int argc, char **argv) {\n"
    "\tfor (int i = 0; i < argc; i++) {\n"
    "\t\tprintf(\"%d: %s\\n\", i, argv[i]);\n"
    "\t}\n"
    "\treturn add(1, 2) == 3 ? 0 : 1; /* ok */\n"
    "}\n"
)

PY_CODE = (
    "def fib(n: int) -> int:\n"
    "    \"\"\"Return the n-th Fibonacci number.\"\"\"\n"
    "    a, b = 0, 1\n"
    "    for _ in range(n):\n"
    "        a, b = b, a + b\n"
    "    return a\n"
    "\n"
    "\n"
    "if __name__ == \"__main__\":\n"
    "    print([fib(i) for i in range(10)])  # [0, 1, 1, 2, ...]\n"
)

# (name, text). Names are unique; each case is recorded with SPECIAL=0 and SPECIAL=1.
CASES = [
    # ASCII sentences and edges
    ("empty", ""),
    ("space", " "),
    ("two_spaces", "  "),
    ("letter", "a"),
    ("hello", "Hello world"),
    ("hello_lead_space", " Hello world"),
    ("hello_trail_space", "Hello world "),
    ("hello_both_spaces", "   Hello world   "),
    ("sentence", "The quick brown fox jumps over the lazy dog."),
    ("sentence_caps", "THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG!"),
    ("mixed_case", "iPhone eBay McDonald's camelCase snake_case SCREAMING_CASE"),
    ("question", "What's the capital of France? Paris, I think."),
    # whitespace runs
    ("spaces_run", "a  b   c    d          e"),
    ("tabs", "a\tb\t\tc\t\t\t"),
    ("newline", "\n"),
    ("newlines", "line one\nline two\n\nline four\n\n\n"),
    ("crlf", "line one\r\nline two\r\n\r\n"),
    ("cr_only", "a\rb\r\rc"),
    ("mixed_ws", " \t \n \r\n\t\t  \n   x  \t"),
    ("spaces_then_word", "        indented"),
    ("only_ws_long", " " * 33 + "\n" * 5 + "\t" * 3),
    ("trailing_newlines", "end\n\n\n\n"),
    # accents and Latin scripts
    ("accents_fr", "Café crème brûlée, déjà vu à la façon de Noël."),
    ("accents_es", "El niño comió piñata en España; ¿qué pasó? ¡Olé!"),
    ("accents_de", "Über Größe: Müller aß Brötchen. Straße, Fußgänger."),
    ("vietnamese", "Tiếng Việt có nhiều dấu: người, nước, được, Hà Nội."),
    ("nordic", "Æble, ø, å; Þórr and Ðóra in Reykjavík."),
    ("polish_czech", "Zażółć gęślą jaźń. Příliš žluťoučký kůň úpěl ďábelské ódy."),
    ("decomposed_e", "Cafe\u0301 vs Caf\u00e9"),
    # CJK
    ("chinese", "我们今天去北京大学学习人工智能。"),
    ("chinese_trad", "繁體中文測試：臺灣、香港。"),
    ("japanese", "東京は日本の首都です。ひらがなとカタカナ、漢字を使います。"),
    ("korean", "안녕하세요, 한국어 토큰화 테스트입니다."),
    ("cjk_mixed_ascii", "Hello世界 test テスト 123 한국"),
    ("fullwidth", "ＡＢＣ１２３！？"),
    # emoji
    ("emoji", "I love 🍕 and 🎉!"),
    ("emoji_zwj_family", "👨\u200d👩\u200d👧\u200d👦"),
    ("emoji_skin_tones", "👍🏻👍🏼👍🏽👍🏾👍🏿"),
    ("emoji_flags", "🇫🇷🇯🇵🇺🇸"),
    ("emoji_run", "😀😃😄😁😆😅😂🤣"),
    ("emoji_vs16", "❤️ ☺️ ✔️"),
    ("emoji_zwj_prof", "🧑\u200d💻 🏳️\u200d🌈"),
    # code
    ("code_c", C_CODE),
    ("code_python", PY_CODE),
    ("code_json", '{"name": "spotlight", "version": [0, 1, 2], "ok": true, "x": null}'),
    ("code_shell", "for f in *.txt; do echo \"$f\" | tr a-z A-Z >> out.log 2>&1; done"),
    ("code_html", "<div class=\"a\"><p>Hi &amp; bye</p><br/></div>"),
    ("code_sql", "SELECT id, name FROM users WHERE age >= 18 ORDER BY name DESC;"),
    # numbers
    ("num_1", "1"),
    ("num_12", "12"),
    ("num_123", "123"),
    ("num_1234", "1234"),
    ("num_1234567", "1234567"),
    ("num_pi", "3.14159"),
    ("num_commas", "1,000,000"),
    ("num_mixed", "In 2024, 3 of 10 (30%) cost $1,299.99 or -4.5e-3 units; call 555-0123."),
    ("num_long", "12345678901234567890"),
    ("num_date_time", "2025-11-28T20:11:00Z and 12:34:56.789"),
    # contractions
    ("contractions", "it's don't they're we've I'm you'll he'd"),
    ("contractions_upper", "IT'S DON'T THEY'RE WE'VE I'M YOU'LL HE'D JOHN'S"),
    ("contractions_mixed", "It'S dOn'T We'Re 's 't 're 've 'm 'll 'd"),
    ("apostrophe_curly", "It\u2019s John\u2019s \u2018quoted\u2019"),
    # punctuation
    ("punct_runs", "Wait... what?!?! --- *** ### !!! ??? ;;; ::: ..."),
    ("punct_brackets", "((a)) [[b]] {{c}} <<d>> \"e\" 'f' `g`"),
    ("punct_ascii_all", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"),
    ("ellipsis_dashes", "So\u2026 well \u2014 maybe \u2013 yes."),
    # URLs and paths
    ("url", "https://example.com/path/to/page?query=1&lang=en#section-2"),
    ("email_url", "Mail bob.smith+test@example.org or see http://localhost:8080/api/v1/"),
    ("path", "/usr/local/lib/python3.11/site-packages/numpy/__init__.py"),
    # special tokens written as text
    ("chatml", "<|im_start|>user\nhi<|im_end|>"),
    ("chatml_full", "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"),
    ("endoftext", "<|endoftext|>"),
    ("endoftext_in_text", "before<|endoftext|>after"),
    ("special_spaced", " <|im_start|> <|im_end|> "),
    ("special_partial", "<|im_start <|im_end| |endoftext|>"),
    # byte-level oddities and other scripts
    ("lone_combining", "\u0301"),
    ("combining_stack", "a\u0300\u0301\u0302\u0303 Z\u0351\u0352\u0353"),
    ("arabic", "مرحبا بالعالم، هذا اختبار."),
    ("hebrew", "שלום עולם, זה מבחן."),
    ("rtl_mixed", "abc \u202eREVERSED\u202c def \u05e9\u05dc\u05d5\u05dd 123"),
    ("math_symbols", "∀x∈ℝ: x² ≥ 0, ∑ᵢ aᵢ ≤ ∫₀^∞ f(t) dt ≈ π ≠ ∞ √2 ⊕ ⊗"),
    ("greek_cyrillic", "Αλφα βήτα γάμμα; Привет, мир! Ёжик."),
    ("hindi_thai", "नमस्ते दुनिया; สวัสดีชาวโลก"),
    ("zero_width", "a\u200bb\u200cc\u200dd\ufeffe"),
    ("nbsp", "a\u00a0b\u2009c\u3000d"),
    ("control_chars", "a\x00b\x01c\x1bd\x7fe"),
    ("supplementary", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟘𝟙𝟚 𓀀 \U0010fffd"),
    # long text
    ("long_paragraph", LONG_TEXT),
]


def hx(b):
    return b.hex() if b else "-"


def detokenize(vocab, ids):
    arr = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    cap = 64 + 64 * len(ids)
    buf = ctypes.create_string_buffer(cap)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, cap, False, True)
    if n < 0:
        sys.exit(f"llama_detokenize needed {-n} bytes")
    return buf.raw[:n]


def token_to_piece(vocab, tid, special):
    buf = ctypes.create_string_buffer(512)
    n = llama_cpp.llama_token_to_piece(vocab, tid, buf, 512, 0, special)
    if n < 0:
        sys.exit(f"llama_token_to_piece({tid}) needed {-n} bytes")
    return buf.raw[:n]


def llama_cpp_version(venv_root):
    marker = os.path.join(venv_root, "COMPLETE")
    if os.path.exists(marker):
        with open(marker) as f:
            return " ".join(f.read().split()[:3])
    return f"llama-cpp-python {llama_cpp.__version__}"


def write_fixture(model_path, out_path, version):
    llm = llama_cpp.Llama(model_path=model_path, vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    lines = [
        f"# Tokenizations by {version}; regenerate with tools/ref/make-token-fixtures.py",
        f"# model {os.path.basename(model_path)} n_vocab {n_vocab} "
        f"bos {llm.token_bos()} eos {llm.token_eos()} add_bos {int(llm._model.add_bos_token())}",
        "# tok NAME SPECIAL INPUT_HEX IDS DETOK_HEX | piece ID SPECIAL PIECE_HEX ATTR (see the script)",
    ]
    names = set()
    inexact = []
    for name, text in CASES:
        assert name not in names and name.replace("_", "").isalnum(), name
        names.add(name)
        data = text.encode("utf-8")
        for special in (0, 1):
            ids = llm.tokenize(data, add_bos=True, special=bool(special))
            detok = detokenize(vocab, ids)
            if detok != data:
                inexact.append(f"{name}/{special}")
            lines.append("\t".join(["tok", name, str(special), hx(data),
                                    " ".join(map(str, ids)) or "-", hx(detok)]))
    sample = sorted(set(list(range(128)) + list(range(0, n_vocab, 1009)) +
                        list(range(n_vocab - 64, n_vocab)) + [llm.token_bos(), llm.token_eos()]))
    for tid in sample:
        attr = llama_cpp.llama_vocab_get_attr(vocab, tid)
        for special in (0, 1):
            piece = token_to_piece(vocab, tid, bool(special))
            lines.append("\t".join(["piece", str(tid), str(special), hx(piece), str(attr)]))
    with open(out_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out_path}: {len(CASES)} strings x 2, {len(sample)} pieces x 2; "
          f"detokenize differs from input for {inexact or 'none'}")


def main():
    cache = cache_dir()
    version = llama_cpp_version(os.path.join(cache, "llama-cpp"))
    for stem, fname in MODELS.items():
        path = os.path.join(cache, fname)
        if not os.path.exists(path):
            sys.exit(f"missing {path}: run tools/fetch-model.sh first")
        write_fixture(path, os.path.join(FIXTURES, f"tokens-{stem}.tsv"), version)


if __name__ == "__main__":
    main()
