"""Label values for hashtags: whatever a tag contains, a valid and bounded Prometheus label."""

from __future__ import annotations

import zlib

#: Longest hashtag label value; longer tags are cut and keep a checksum, so two stay distinct.
MAX_LABEL_CHARS = 120


def hashtag_label(tag: str) -> str:
    """A hashtag as a label value: text the exposition format can carry, of bounded length.

    Quotes, backslashes and newlines are escaped by the exposition itself; what it cannot encode
    (a lone surrogate) is written as a backslash escape, and a very long tag is shortened.
    """
    try:
        tag.encode()
    except UnicodeEncodeError:
        tag = tag.encode("utf-8", "backslashreplace").decode()
    if len(tag) > MAX_LABEL_CHARS:
        checksum = zlib.crc32(tag.encode())
        tag = f"{tag[: MAX_LABEL_CHARS - 10]}…{checksum:08x}"
    return tag
