"""Hashtags: normalising tags and extracting them from post text."""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Iterable, Iterator

# `#` followed by word characters, with an optional closing `#` (the Chinese `#话题#` style).
_TAG_RE = re.compile(r"#(\w+)#?")
# Up to this many `#` in a text, matching all tags at once beats stopping early.
_FEW_HASH_SIGNS = 64
# Up to this many tags, a list finds repeats quicker than a dict.
_FEW_TAGS = 8


def _hash_signs() -> frozenset[str]:
    """Return every character other than ``#`` whose NFKC form contains ``#`` (U+FE5F, U+FF03).

    Computed over all code points from the running Python's Unicode database, so it never goes
    stale. A character's NFKC form contains ``#`` exactly when its NFKD form does (``#`` neither
    composes nor reorders) and NFKD maps characters one by one, so a whole block is screened with
    one call and only a block that yields ``#`` is looked at character by character (a few ms).
    """
    # Each code point of a plane in UTF-32-LE: low byte, middle byte, plane number, zero.
    plane_bytes = bytearray(4 * 0x10000)
    plane_bytes[0::4] = bytes(range(256)) * 256
    plane_bytes[1::4] = b"".join(bytes([middle]) * 256 for middle in range(256))
    found: set[str] = set()
    for plane in range((sys.maxunicode + 1) >> 16):
        plane_bytes[2::4] = bytes([plane]) * 0x10000
        chars = plane_bytes.decode("utf-32-le", "surrogatepass")
        for start in range(0, len(chars), 4096):
            block = chars[start : start + 4096]
            if "#" in unicodedata.normalize("NFKD", block):
                found.update(
                    ch for ch in block if ch != "#" and "#" in unicodedata.normalize("NFKD", ch)
                )
    return frozenset(found)


#: Characters other than ``#`` that give ``#`` under NFKC.
HASH_SIGN_VARIANTS: frozenset[str] = _hash_signs()
_HASH_SIGN_VARIANT_RE = re.compile("|".join(map(re.escape, sorted(HASH_SIGN_VARIANTS))))


def normalise_tag(tag: str) -> str:
    """Return ``tag`` NFKC-normalised, stripped of ``#`` at both ends and casefolded.

    The result may be empty; callers drop empty tags.
    """
    if tag.isascii():
        # ASCII is NFKC-stable and its casefold is its lower case.
        return tag.strip("#").lower()
    return unicodedata.normalize("NFKC", tag).strip("#").casefold()


def _may_contain_hash(text: str) -> bool:
    """Return whether ``text`` can contain ``#`` after NFKC normalisation."""
    if "#" in text:
        return True
    if text.isascii():
        return False
    return _HASH_SIGN_VARIANT_RE.search(text) is not None


def _matchable(text: str) -> str | None:
    """Return ``text`` ready for the tag pattern (NFKC-normalised), or ``None`` if it has no tag."""
    if not _may_contain_hash(text):
        return None
    return text if text.isascii() else unicodedata.normalize("NFKC", text)


def extract_hashtags(text: str) -> list[str]:
    """Return the distinct normalised hashtags written in ``text``, in first-seen order.

    A hashtag is ``#`` followed by one or more word characters (``\\w``) with an optional closing
    ``#``, found after NFKC normalisation of the whole text.
    """
    matchable = _matchable(text)
    if matchable is None:
        return []
    tags: dict[str, None] = {}
    for raw in _TAG_RE.findall(matchable):
        tag = normalise_tag(raw)
        if tag:
            tags[tag] = None
    return list(tags)


def _distinct(items: Iterable[str]) -> Iterator[str]:
    """Yield each item of ``items`` the first time it comes."""
    seen: set[str] = set()
    for item in items:
        if item not in seen:
            seen.add(item)
            yield item


def extract_hashtags_at_most(text: str, limit: int) -> list[str] | None:
    """Return ``extract_hashtags(text)``, or ``None`` as soon as it finds more than ``limit`` tags.

    Hostile text stays cheap: with many ``#`` signs, matching stops at the first tag over the
    limit and a tag written many times is normalised once. Otherwise ``findall`` is quicker.
    """
    matchable = _matchable(text)
    if matchable is None:
        return []
    raws: Iterable[str]
    if matchable.count("#") <= _FEW_HASH_SIGNS:
        raws = _TAG_RE.findall(matchable)
    else:
        raws = _distinct(match[1] for match in _TAG_RE.finditer(matchable))
    # At most limit + 1 tags are kept, so a list finds repeats quickly enough.
    tags: list[str] = []
    for raw in raws:
        tag = normalise_tag(raw)
        if tag and tag not in tags:
            if len(tags) >= limit:
                return None
            tags.append(tag)
    return tags


def hashtags_of(raw: list[str]) -> tuple[str, ...]:
    """Return the distinct normalised tags of a ``hashtags`` list, empty ones dropped, in order."""
    if len(raw) > _FEW_TAGS:
        return tuple(dict.fromkeys(filter(None, map(normalise_tag, raw))))
    tags: list[str] = []
    for item in raw:
        # normalise_tag with its ASCII case inlined: this runs for every tag of every post.
        tag = item.strip("#").lower() if item.isascii() else normalise_tag(item)
        if tag and tag not in tags:
            tags.append(tag)
    return tuple(tags)
