"""Label values for hashtags: whatever a tag contains, a valid and bounded Prometheus label."""

from __future__ import annotations

import base64
import hashlib

#: Longest hashtag label value; longer tags are cut and keep a digest, so two stay distinct.
MAX_LABEL_CHARS = 120
# 96 bits of BLAKE2b: two long tags with one label would take about 2**48 tries to forge, where
# a 32-bit checksum such as CRC-32 is forged in a fraction of a second (and two series with one
# label set make the exposition invalid). 12 bytes are 16 URL-safe base64 characters.
_DIGEST_BYTES = 12
_DIGEST_CHARS = 16
_KEPT_CHARS = MAX_LABEL_CHARS - _DIGEST_CHARS - 1


def hashtag_label(tag: str) -> str:
    """A hashtag as a label value: text the exposition format can carry, of bounded length.

    Quotes, backslashes and newlines are escaped by the exposition itself; what it cannot encode
    (a lone surrogate) is written as a backslash escape, and a tag over ``MAX_LABEL_CHARS`` is cut
    to its first characters, ``…`` and a digest of the whole tag. A parsed hashtag never contains
    ``…`` (NFKC turns it into ``...``), so a cut label is never the label of another tag.
    """
    try:
        encoded = tag.encode()
    except UnicodeEncodeError:
        tag = tag.encode("utf-8", "backslashreplace").decode()
        encoded = tag.encode()
    if len(tag) > MAX_LABEL_CHARS:
        digest = hashlib.blake2b(encoded, digest_size=_DIGEST_BYTES).digest()
        tag = f"{tag[:_KEPT_CHARS]}…{base64.urlsafe_b64encode(digest).decode()}"
    return tag
