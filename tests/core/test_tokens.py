import pytest

from lora_studio.core.tokens import CONTEXT_LENGTH, MAX_CAPTION_TOKENS, count_tokens, encode

CAPTIONS = [
    "a photo of a cat",
    "my_style, 1girl, solo, long hair, looking at viewer, smile, open mouth, blue eyes",
    "masterpiece, best quality, (detailed background:1.2), [sketch], {watercolor}",
    "Don't stop, it's y'all's DOG's toy; 'sup 'LL 'Re ''s",
    "café naïve résumé Ångström Æsir œuvre straße",
    "Cafe\u0301 written with a combining accent",
    "東京タワー、夜景、ネオン",
    "Привет мир, مرحبا بالعالم, Γειά σου ΚΟΣΜΟΣ",
    "emoji 🎨🖌️ and symbols ★☆♥ ©®™",
    "1024x768 resolution, 50% off, $100, 3.14159, ½ ² ⅷ",
    "tabs\tand\n\nnewlines   and  spaces",
    "no-break\u00a0space and ideographic\u3000space",
    "weird_under_score-hyphen.dots... ellipsis… dash—en–dash",
    "a<|endoftext|>b <|startoftext|>c",
    "İstanbul ǅ ǈ ﬁ ligature ＡＢＣ fullwidth",
    "\u200bzero\u200bwidth joiner",
    "UPPER lower MiXeD CaSe",
    "hello\u0300\u0301 stacked accents",
    "x" * 120,
    "antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
    "  leading and trailing  ",
    "",
    "!!!???...,,,;;;:::",
    "https://example.com/path?query=1&x=2#frag",
    "score_9, score_8_up, rating_safe, source_anime",
    "by greg rutkowski, trending on artstation, 8k, octane render",
    "(masterpiece:1.4), ((best quality)), [[low quality]]",
    "line one\r\nline two\rline three",
    "tag with 'single' and \"double\" quotes",
    "a red apple on a wooden table, soft light, shallow depth of field",
    "sep\x1cchar\x1fx",
]


def test_known_ids():
    assert encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert count_tokens("a photo of a cat") == 5
    assert count_tokens("") == 0
    assert MAX_CAPTION_TOKENS == CONTEXT_LENGTH - 2 == 75


def test_digits_are_single_tokens():
    assert count_tokens("1024") == 4


def test_matches_transformers_clip_tokenizer():
    transformers = pytest.importorskip("transformers")
    from lora_studio.core.resources import resource

    tok = transformers.CLIPTokenizer.from_pretrained(str(resource("tokenizer")))
    mismatches = [
        (c, tok(c, add_special_tokens=False)["input_ids"], encode(c))
        for c in CAPTIONS
        if tok(c, add_special_tokens=False)["input_ids"] != encode(c)
    ]
    assert mismatches == []
    long = ", ".join(CAPTIONS[:10])
    assert count_tokens(long) == len(tok(long)["input_ids"]) - 2
