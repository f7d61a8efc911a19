"""Hashtag vocabulary of the simulator: a fixed long tail of ordinary tags and their spelling variants.

The vocabulary is the same for every seed (built from its own fixed seed), so two files of different
seeds talk about the same tags. Tags are drawn Zipf-like: rank ``r`` has weight ``1 / r**ZIPF_EXPONENT``.
"""

from __future__ import annotations

import random
from functools import lru_cache
from itertools import accumulate
from typing import Final

VOCABULARY_SIZE: Final = 50_000
ZIPF_EXPONENT: Final = 1.05
_VOCABULARY_SEED: Final = 20_250_112

#: The head of the distribution: tags real lifestyle apps see every day, Latin and CJK.
_COMMON_TAG_WORDS: Final = (
    "food travel ootd 美食 穿搭 makeup fitness skincare 旅行 日常 photography coffee fashion 护肤 探店 "
    "cats dogs music art books 好物分享 美妆 健身 拍照 love instagood nature sunset recipe baking 学习 "
    "读书 vlog hiking gaming anime kpop cosplay nails hair 减肥 早餐 咖啡 宠物 猫咪 手账 家居 装修 租房 留学 study "
    "studygram design interior diy crafts garden plants yoga running cycling camping beach "
    "mountains city streetstyle vintage thrift sneakers jewelry perfume wedding baby "
    "parenting family friends weekend mood selfie film movies kdrama cdrama drama tea matcha "
    "dessert cake hotpot 火锅 奶茶 甜品 电影 追剧 音乐 画画 摄影 风景 上海 北京 成都 台北 香港 kualalumpur singapore "
    "tokyo seoul bangkok newyork london sydney toronto paris berlin roadtrip foodie "
    "streetfood homecooking mealprep vegan glutenfree wellness selfcare journal minimalism "
)
COMMON_TAGS: Final[tuple[str, ...]] = tuple(_COMMON_TAG_WORDS.split())

_CONSONANTS: Final = "bdfghjklmnprstvwyz"
_VOWELS: Final = "aeiou"
_ENDINGS: Final = ("", "", "", "n", "r", "s", "l", "ng")
_CJK_CHARS: Final = (
    "美食旅行日常好物分享生活记录学习读书健身穿搭护肤摄影宠物猫狗咖啡甜品火锅城市周末"
    "家居手工花草音乐电影游戏动漫春夏秋冬山海风景早午晚餐新人打卡日记心情小店宝藏"
)


def _synthetic_word(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return "".join(rng.choice(_CJK_CHARS) for _ in range(rng.randint(2, 4)))
    syllables = rng.randint(2, 4)
    word = "".join(rng.choice(_CONSONANTS) + rng.choice(_VOWELS) for _ in range(syllables))
    return word + rng.choice(_ENDINGS)


@lru_cache(maxsize=4)
def vocabulary(size: int = VOCABULARY_SIZE, exclude: tuple[str, ...] = ()) -> tuple[str, ...]:
    """``size`` distinct ordinary tags, most popular first; none of ``exclude`` (casefolded) appears."""
    rng = random.Random(_VOCABULARY_SEED)
    banned = {tag.casefold() for tag in exclude}
    seen: set[str] = set()  # membership only; order comes from the list
    tags: list[str] = []
    for tag in COMMON_TAGS:
        if tag not in seen and tag.casefold() not in banned:
            seen.add(tag)
            tags.append(tag)
    while len(tags) < size:
        word = _synthetic_word(rng)
        if word not in seen and word.casefold() not in banned:
            seen.add(word)
            tags.append(word)
    return tuple(tags[:size])


@lru_cache(maxsize=4)
def zipf_cumulative_weights(size: int, exponent: float = ZIPF_EXPONENT) -> tuple[float, ...]:
    """Cumulative weights ``sum(1 / r**exponent for r <= rank)`` for ``random.choices(cum_weights=)``."""
    return tuple(accumulate(1.0 / rank**exponent for rank in range(1, size + 1)))


_FULLWIDTH_OFFSET: Final = 0xFEE0


def fullwidth(text: str) -> str:
    """``text`` with ASCII letters, digits and ``#`` in their fullwidth forms (NFKC maps them back)."""
    return "".join(chr(ord(ch) + _FULLWIDTH_OFFSET) if "!" <= ch <= "~" else ch for ch in text)


def spelling_variants(tag: str, display: str | None = None) -> tuple[str, ...]:
    """Ways people write one tag; all are the same hashtag after NFKC + casefold.

    ``display`` is the usual mixed-case spelling (``TikTokRefugee``); CJK tags have only themselves.
    """
    shown = display or tag
    if not tag.isascii():
        return (tag,)
    variants = [tag, shown, tag.upper(), shown[:1].upper() + shown[1:].lower(), fullwidth(shown)]
    unique: list[str] = []
    for variant in variants:
        if variant not in unique:
            unique.append(variant)
    return tuple(unique)
