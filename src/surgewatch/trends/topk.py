"""Top-K hashtags: the exact top-k of one closed window, and a bounded-memory sketch across windows.

A closed window's exact per-hashtag counts (``WindowCount`` records of metric ``hashtag_posts``) are
known on the downstream partition that owns them, so :func:`top_of_window` ranks them exactly; that
is what feeds ``surgewatch_top_hashtag_posts{hashtag}``. Across windows hashtag cardinality is
unbounded, so :class:`WindowTopK` wraps Apache DataSketches' frequent-items sketch (Misra-Gries with
weighted updates): flat memory, mergeable across partitions, and every reported count comes with
guaranteed bounds ``lower_bound <= true count <= upper_bound``.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Self, TypeAlias

from datasketches import frequent_items_error_type, frequent_strings_sketch

# 2**12 hash-map slots: the sketch tracks at most 0.75 * 4096 = 3072 tags, whatever the number of
# distinct tags seen, so memory is flat (~3072 * (12 + tag bytes) serialized; ~70 KB for 10-byte
# tags). The library's a priori error is epsilon * total_weight with
# epsilon = 3.5 / 2**lg_max_map_size (`get_epsilon_for_lg_size(12)` = 0.0008544921875), i.e. any
# count is off by at most ~0.085 % of all hashtag posts fed in. 2**13 would halve the error and
# double the memory; 3072 tracked tags is already three times the largest TOP_K Settings allows.
DEFAULT_LG_MAX_MAP_SIZE = 12
DEFAULT_K = 20
# The library refuses smaller maps; larger than 2**26 slots is gigabytes, surely a mistake.
MIN_LG_MAX_MAP_SIZE = 3
MAX_LG_MAX_MAP_SIZE = 26
# Byte 3 of a serialized frequent-items sketch holds lg_max_map_size (DataSketches preamble layout).
_LG_MAX_MAP_SIZE_OFFSET = 3

TopEntry: TypeAlias = tuple[str, int, int, int]
"""``(key, estimate, lower_bound, upper_bound)``."""


def top_of_window(counts: Mapping[str, int], k: int) -> list[tuple[str, int]]:
    """The exact top ``k`` of one closed window's counts: count descending, ties by key ascending.

    Keys with a non-positive count are not ranked (a closed window publishes only non-zero counts).
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    positive = ((key, count) for key, count in counts.items() if count > 0)
    return heapq.nsmallest(k, positive, key=lambda item: (-item[1], item[0]))


class WindowTopK:
    """Approximate top-K of hashtag counts across windows and partitions, in bounded memory.

    Feed each closed window's exact counts with :meth:`add`. At most ``0.75 * 2**lg_max_map_size``
    tags are tracked; :attr:`max_error` is the largest amount by which any count can be off and is
    at most :attr:`epsilon` ``* total_weight``, where ``epsilon = 3.5 / 2**lg_max_map_size``
    (0.0008544921875 for the default 12, i.e. about 0.085 % of the total weight). Until more tags
    than that capacity have been seen, nothing is evicted and every count is exact.
    """

    __slots__ = ("_k", "_lg_max_map_size", "_sketch")

    def __init__(self, k: int = DEFAULT_K, lg_max_map_size: int = DEFAULT_LG_MAX_MAP_SIZE) -> None:
        if not MIN_LG_MAX_MAP_SIZE <= lg_max_map_size <= MAX_LG_MAX_MAP_SIZE:
            raise ValueError(
                f"lg_max_map_size must be in [{MIN_LG_MAX_MAP_SIZE}, {MAX_LG_MAX_MAP_SIZE}],"
                f" got {lg_max_map_size}"
            )
        capacity = capacity_for(lg_max_map_size)
        if not 1 <= k <= capacity:
            raise ValueError(
                f"k must be in [1, {capacity}] for lg_max_map_size={lg_max_map_size}"
                f" (the sketch tracks at most {capacity} keys), got {k}"
            )
        self._k = k
        self._lg_max_map_size = lg_max_map_size
        self._sketch = frequent_strings_sketch(lg_max_map_size)

    @property
    def k(self) -> int:
        """How many entries :meth:`top` returns by default."""
        return self._k

    @property
    def lg_max_map_size(self) -> int:
        """Base-2 logarithm of the sketch's hash-map size."""
        return self._lg_max_map_size

    @property
    def epsilon(self) -> float:
        """A priori relative error: :attr:`max_error` never exceeds ``epsilon * total_weight``."""
        return float(frequent_strings_sketch.get_epsilon_for_lg_size(self._lg_max_map_size))

    @property
    def total_weight(self) -> int:
        """Sum of every count fed in (exact)."""
        return int(self._sketch.total_weight)

    @property
    def max_error(self) -> int:
        """Largest possible error of any estimate: ``upper_bound - lower_bound`` of every key."""
        # The Python binding does not expose get_maximum_error(), but for any key, tracked or not,
        # upper_bound - lower_bound is exactly the sketch's offset, which is that maximum error.
        return int(self._sketch.get_upper_bound("") - self._sketch.get_lower_bound(""))

    def add(self, key: str, count: int) -> None:
        """Add ``count`` posts of ``key`` (one window's exact count of that key)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count} for key {key!r}")
        try:
            self._sketch.update(key, count)
        except TypeError as exc:
            # The binding's only complaint is an argument it cannot convert; say which one.
            raise ValueError(
                f"cannot add key {key!r} with count {count!r}: the key must be UTF-8-encodable"
                " text (no lone surrogates) and the count an int below 2**64"
            ) from exc

    def top(self, n: int | None = None) -> list[TopEntry]:
        """Up to ``n`` (default :attr:`k`) ``(key, estimate, lower_bound, upper_bound)`` rows.

        Sorted by estimate descending, then key. Uses NO_FALSE_NEGATIVES: every tracked key is a
        candidate, so a key whose true count exceeds :attr:`max_error` is never missing; the
        alternative, NO_FALSE_POSITIVES, would drop real heavy hitters whose lower bound is still
        below the error, leaving the ranking empty after the first eviction. The bounds on each row
        say how sure the estimate is; ``lower_bound <= true count <= upper_bound`` always holds.
        """
        limit = self._k if n is None else n
        if limit < 0:
            raise ValueError(f"n must be >= 0, got {limit}")
        # threshold 0 means "the sketch's maximum error": every tracked key has upper bound above it.
        rows = self._sketch.get_frequent_items(frequent_items_error_type.NO_FALSE_NEGATIVES, 0)
        ranked: list[TopEntry] = [
            (str(key), int(estimate), int(lower), int(upper))
            for key, estimate, lower, upper in rows
        ]
        return heapq.nsmallest(limit, ranked, key=lambda row: (-row[1], row[0]))

    def merge(self, other: WindowTopK) -> None:
        """Fold ``other`` (e.g. another downstream partition's sketch) into this one."""
        self._sketch.merge(other._sketch)

    def serialize(self) -> bytes:
        """The sketch in the standard DataSketches binary format (readable by any of its languages)."""
        return bytes(self._sketch.serialize())

    @classmethod
    def deserialize(cls, data: bytes, k: int = DEFAULT_K) -> Self:
        """Rebuild a sketch from :meth:`serialize` output; ``k`` is a view setting, not stored."""
        try:
            sketch = frequent_strings_sketch.deserialize(data)
        except (IndexError, ValueError, RuntimeError) as exc:
            raise ValueError(f"not a serialized frequent-strings sketch: {exc}") from exc
        instance = cls(k, data[_LG_MAX_MAP_SIZE_OFFSET])
        instance._sketch = sketch
        return instance

    def __repr__(self) -> str:
        return (
            f"WindowTopK(k={self._k}, lg_max_map_size={self._lg_max_map_size},"
            f" total_weight={self.total_weight}, max_error={self.max_error})"
        )


def capacity_for(lg_max_map_size: int) -> int:
    """How many keys a sketch with ``2**lg_max_map_size`` map slots can track."""
    return (1 << lg_max_map_size) * 3 // 4
