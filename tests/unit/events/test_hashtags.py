"""Hashtags: normalising tags, extracting them from text, and the list rule."""

from __future__ import annotations

import sys
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from surgewatch.events.hashtags import (
    HASH_SIGN_VARIANTS,
    extract_hashtags,
    extract_hashtags_at_most,
    hashtags_of,
    normalise_tag,
)

ASCII_WORD = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"


def fullwidth(ch: str) -> str:
    """Return the fullwidth form (U+FF01..U+FF5E) of a printable ASCII character."""
    return chr(ord(ch) + 0xFEE0)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("#TikTokRefugee", "tiktokrefugee"),
        ("tiktokrefugee", "tiktokrefugee"),
        ("TIKTOKREFUGEE", "tiktokrefugee"),
        ("＃ＴｉｋＴｏｋＲｅｆｕｇｅｅ", "tiktokrefugee"),
        ("﹟TikTokRefugee", "tiktokrefugee"),
        ("#话题#", "话题"),
        ("##rednote##", "rednote"),
        ("a#b", "a#b"),
        ("Straße", "strasse"),
        ("ﬁre", "fire"),
        ("cafe\u0301", "café"),
        ("小红书", "小红书"),
        ("#", ""),
        ("＃＃", ""),
        ("", ""),
    ],
)
def test_normalise_tag_examples(tag: str, expected: str) -> None:
    assert normalise_tag(tag) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello #TikTokRefugee and #rednote!", ["tiktokrefugee", "rednote"]),
        ("#话题# 你好", ["话题"]),
        ("你好#小红书#再见", ["小红书"]),
        ("＃ＴｉｋＴｏｋＲｅｆｕｇｅｅ is here", ["tiktokrefugee"]),
        ("﹟小红书", ["小红书"]),
        ("🎉#party🎉 🔥#fun🔥", ["party", "fun"]),
        ("she said \"#quoted\" then '#single'", ["quoted", "single"]),
        ("back\\#slash\\ and #tab\tx", ["slash", "tab"]),
        ("line one #first\n#second\r\n#third", ["first", "second", "third"]),
        ("#A #a #Ａ #b #A", ["a", "b"]),
        ("#tag_1 #2025", ["tag_1", "2025"]),
        ("#cafe\u0301 #café", ["café"]),
        ("#tik-tok", ["tik"]),
        ("mail me at a#b", ["b"]),
        # The optional closing `#` is part of a match, so `#a#b` is the tag `a` and a bare `b`.
        ("#a#b", ["a"]),
        ("no tags here", []),
        ("# alone", []),
        ("#", []),
        ("## #!", []),
        ("", []),
    ],
)
def test_extract_hashtags_examples(text: str, expected: list[str]) -> None:
    assert extract_hashtags(text) == expected


def test_extract_at_most_stops_over_the_limit() -> None:
    thirty = " ".join(f"#t{i}" for i in range(30))
    assert extract_hashtags_at_most(thirty, 30) == [f"t{i}" for i in range(30)]
    assert extract_hashtags_at_most(thirty + " #t30", 30) is None
    # Repeats and case variants are one tag each, so they do not count towards the limit.
    assert extract_hashtags_at_most(thirty + " #T0 #t29 ＃Ｔ1", 30) == [f"t{i}" for i in range(30)]


@pytest.mark.parametrize("limit", [30, 1000])
@pytest.mark.parametrize(
    "text",
    [
        "#Red #red ＃ＲＥＤ " * 40 + "#blue #话题# " * 10,
        " ".join(f"#t{i % 20}" for i in range(200)) + " #last#",
        "#" * 70 + "a #b",
    ],
    ids=["repeats", "cycle", "hash-run"],
)
def test_text_with_many_hash_signs_gives_the_same_tags(text: str, limit: int) -> None:
    # Over 64 `#` signs the matching stops early; the tags must not change.
    assert text.count("#") + text.count("＃") > 64
    assert extract_hashtags_at_most(text, limit) == extract_hashtags(text)


def test_text_with_many_hash_signs_stops_over_the_limit() -> None:
    text = " ".join(f"#t{i}" for i in range(31)) + " #t0" * 50
    assert len(extract_hashtags(text)) == 31
    assert extract_hashtags_at_most(text, 30) is None
    assert extract_hashtags_at_most(text, 31) == [f"t{i}" for i in range(31)]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([], ()),
        (["TikTokRefugee"], ("tiktokrefugee",)),
        (["rednote", "RedNote", "REDNOTE"], ("rednote",)),
        (["b", "a", "B"], ("b", "a")),
        (["TikTokRefugee", "#tiktokrefugee", "＃ＴｉｋＴｏｋＲｅｆｕｇｅｅ"], ("tiktokrefugee",)),
        (["", "#", "x", "##"], ("x",)),
        (["#话题#", "话题", "Straße", "strasse"], ("话题", "strasse")),
        (["a\x00b", "A", " a "], ("a\x00b", "a", " a ")),
        # Longer lists take another path; the rule is the same.
        (
            ["c", "B", "", "a", "#b", "C", "＃Ａ", "d", "e", "#", "f"],
            ("c", "b", "a", "d", "e", "f"),
        ),
    ],
)
def test_hashtags_of_examples(raw: list[str], expected: tuple[str, ...]) -> None:
    assert hashtags_of(raw) == expected


def test_hash_sign_variants_are_every_character_that_becomes_hash() -> None:
    every = {
        ch
        for ch in map(chr, range(sys.maxunicode + 1))
        if ch != "#" and "#" in unicodedata.normalize("NFKC", ch)
    }
    assert every == HASH_SIGN_VARIANTS
    assert {"\uff03", "\ufe5f"} <= HASH_SIGN_VARIANTS


def test_normalise_tag_is_not_idempotent_in_general() -> None:
    # Casefolding after NFKC can leave text that NFKC recomposes: ß + accent folds to "ss" + accent,
    # which NFKC turns into "s" + "ś". Only the properties below hold for all strings.
    assert normalise_tag("ß\u0301") == "ss\u0301"
    assert normalise_tag("ss\u0301") == "s\u015b"


@settings(max_examples=300)
@given(st.text())
def test_normalise_tag_never_has_hash_at_either_end(tag: str) -> None:
    result = normalise_tag(tag)
    assert not result.startswith("#")
    assert not result.endswith("#")


@settings(max_examples=300)
@given(st.text())
def test_normalise_tag_is_casefolded_and_ignores_nfkc_and_hash_wrapping(tag: str) -> None:
    result = normalise_tag(tag)
    assert result.casefold() == result
    assert normalise_tag(unicodedata.normalize("NFKC", tag)) == result
    assert normalise_tag(f"#{tag}#") == result


@settings(max_examples=300)
@given(st.text())
def test_normalise_tag_is_idempotent_when_the_result_is_nfkc_stable(tag: str) -> None:
    result = normalise_tag(tag)
    if unicodedata.is_normalized("NFKC", result):
        assert normalise_tag(result) == result


@settings(max_examples=300)
@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_normalise_tag_is_idempotent_on_ascii(tag: str) -> None:
    assert normalise_tag(normalise_tag(tag)) == normalise_tag(tag)


@settings(max_examples=200)
@given(st.text(alphabet=ASCII_WORD, min_size=1, max_size=20), st.data())
def test_case_and_width_variants_of_an_ascii_tag_are_one_tag(tag: str, data: st.DataObject) -> None:
    variant = "".join(
        data.draw(
            st.sampled_from([ch.lower(), ch.upper(), fullwidth(ch.lower()), fullwidth(ch.upper())])
        )
        for ch in tag
    )
    sign = data.draw(st.sampled_from(["#", "\uff03", "\ufe5f"]))
    closing = data.draw(st.sampled_from(["", "#", "\uff03"]))
    assert normalise_tag(variant) == tag.lower()
    assert normalise_tag(sign + variant + closing) == tag.lower()
    assert extract_hashtags(f"x {sign}{variant}{closing} y {sign}{tag}") == [tag.lower()]
    assert hashtags_of([variant, tag, sign + tag]) == (tag.lower(),)


TAG_ALPHABET = st.sampled_from(["a", "A", "b", "#", "\uff03", "\x00", "ß", "Ｂ", "\u0301", " "])


@settings(max_examples=300)
@given(st.lists(st.text(alphabet=TAG_ALPHABET, max_size=4), max_size=12))
def test_hashtags_of_is_the_distinct_non_empty_normalised_tags(raw: list[str]) -> None:
    expected = tuple(dict.fromkeys(tag for tag in map(normalise_tag, raw) if tag))
    assert hashtags_of(raw) == expected


@settings(max_examples=300)
@given(
    st.text(
        alphabet=st.sampled_from(["#", "\uff03", "a", "B", "话", " ", "\n", "-", "🎉"]),
        max_size=300,
    )
)
def test_extracted_tags_are_distinct_non_empty_and_casefolded(text: str) -> None:
    tags = extract_hashtags(text)
    assert len(set(tags)) == len(tags)
    for tag in tags:
        assert tag
        assert "#" not in tag
        assert tag.casefold() == tag
    assert extract_hashtags_at_most(text, len(tags)) == tags
    if tags:
        assert extract_hashtags_at_most(text, len(tags) - 1) is None
