"""Shared by the scale-out and crash-recovery tests: an event set and its truth, a group of workers.

The truth is computed here from the events themselves, following the contract and nothing in the
package: a post counts once for each distinct hashtag it names (its ``hashtags`` list when present,
else the ``#tags`` of its NFKC-normalised text; every tag NFKC-normalised, stripped of ``#`` and
casefolded), a signup once for its country upper-cased (``unknown`` when missing or not an
assigned ISO code). Events are valid and written in event-time order, and a partition's records keep
that order, so none is late: each (metric, key, window) count is a plain sum.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import re
import signal
import subprocess
import sys
import time
import unicodedata
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient

from surgewatch.processes import WorkerProcess, die_with_parent, wait_for
from surgewatch.scrape import sample, scrape
from surgewatch.testing import reader_from_start

#: 2025-01-16T04:00:00Z, a multiple of every window size used.
T0_SECONDS = 1_737_000_000
WINDOW_SECONDS = 60
#: Short, so the last windows close soon after the input ends (the stream is quiet for this long).
GRACE_SECONDS = 5
PARTITIONS = 6

#: Twenty assigned ISO 3166-1 alpha-2 codes.
COUNTRIES = ("US", "CN", "GB", "DE", "FR", "JP", "BR", "IN", "CA", "AU",
             "MX", "KR", "IT", "ES", "NL", "SE", "PL", "TR", "ID", "PH")  # fmt: skip
#: Strings that are not assigned codes ("UK" is only reserved): they count as ``unknown``.
NOT_COUNTRIES = ("XX", "usa", "UK", "u")
#: Tags whose normal form needs more than lower-casing: NFKC and full case folding.
SPECIAL_TAGS = ("TikTokRefugee", "小红书", "Straße", "ǅemal", "ﬁnance", "ＲｅｄＮｏｔｅ", "Ⅻcats")
FULLWIDTH = {chr(c): chr(c + 0xFEE0) for c in range(0x21, 0x7F)}
#: The contract's extraction rule: `#`, one or more word characters, an optional closing `#`.
TAG_IN_TEXT = re.compile(r"#(\w+)#?")


def normal_tag(tag: str) -> str:
    """The contract's normal form of one tag: NFKC, stripped of ``#``, casefolded."""
    return unicodedata.normalize("NFKC", tag).strip("#").casefold()


def tags_of(post: Mapping[str, Any]) -> set[str]:
    """The distinct hashtags a post counts for, by the contract's rules."""
    if "hashtags" in post:
        raw = list(post["hashtags"])
    else:
        raw = TAG_IN_TEXT.findall(unicodedata.normalize("NFKC", post.get("text", "")))
    return {tag for tag in map(normal_tag, raw) if tag}


def country_of(signup: Mapping[str, Any]) -> str:
    """The contract's country label of a signup."""
    raw = signup.get("country")
    if raw is None:
        return "unknown"
    upper = str(raw).upper()
    return upper if upper in COUNTRIES else "unknown"


def _spelling(tag: str, rnd: random.Random) -> str:
    """One of the ways a user may write ``tag`` (without its ``#``)."""
    choice = rnd.randrange(5)
    if choice == 0:
        return tag
    if choice == 1:
        return tag.upper()
    if choice == 2:
        return tag.title()
    if choice == 3:
        return "".join(FULLWIDTH.get(ch, ch) for ch in tag)
    return tag.swapcase()


def _ts_value(ms: int, rnd: random.Random) -> float | int | str:
    """Event time ``ms`` in one of the contract's forms: seconds, milliseconds or ISO-8601."""
    form = rnd.randrange(10)
    if form < 7:
        return ms / 1000
    if form < 9:
        return ms
    moment = datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _post(
    rnd: random.Random, vocabulary: Sequence[str], cum_weights: Sequence[float]
) -> dict[str, Any]:
    chosen = rnd.choices(vocabulary, cum_weights=cum_weights, k=rnd.randint(0, 4))
    if chosen and rnd.random() < 0.2:
        chosen.append(chosen[0])  # the same tag twice, spelt differently: counts once
    post: dict[str, Any] = {"lang": "en"}
    form = rnd.randrange(10)
    if form < 4:
        post["hashtags"] = [rnd.choice(("", "#", "＃")) + _spelling(t, rnd) for t in chosen]
        if rnd.random() < 0.3:
            post["text"] = "ignored: the list wins #" + rnd.choice(vocabulary)
    elif form < 9:
        words = []
        for tag in chosen:
            hash_sign = rnd.choice(("#", "#", "＃"))
            closing = "#" if rnd.random() < 0.2 else ""
            words.append(f"{hash_sign}{_spelling(tag, rnd)}{closing}")
        post["text"] = "moving over " + " and ".join(words) + " today"
    elif rnd.random() < 0.5:
        post["hashtags"] = []
        post["text"] = "an empty list wins over #" + rnd.choice(vocabulary)
    else:
        post["text"] = "no tags here # at all"
    return post


def _signup(rnd: random.Random) -> dict[str, Any]:
    signup: dict[str, Any] = {"platform": rnd.choice(("ios", "android", "web"))}
    roll = rnd.random()
    if roll < 0.05:
        return signup  # no country: unknown
    if roll < 0.08:
        signup["country"] = rnd.choice(NOT_COUNTRIES)
        return signup
    # Zipf-like: a few countries carry most signups.
    code = COUNTRIES[min(int(rnd.paretovariate(1.0)) - 1, len(COUNTRIES) - 1)]
    signup["country"] = rnd.choice((code, code.lower(), code.title()))
    return signup


@dataclass(frozen=True)
class Workload:
    """An event file and what the pipeline must publish for it."""

    path: Path
    events: int
    by_stream: dict[str, int]
    #: Window-count records by Kafka key ``metric|key|window_start``: the exact count.
    truth: dict[str, int]
    last_event_seconds: float
    hashtags: int = 0
    countries: int = 0
    windows: int = 0


def make_workload(
    path: Path, *, seed: int, events: int, minutes: int, tags: int, users: int = 20_000
) -> Workload:
    """Write ``events`` valid events over ``minutes`` of event time, in time order, to ``path``."""
    rnd = random.Random(seed)
    vocabulary = [*SPECIAL_TAGS, *(f"tag{i}" for i in range(tags - len(SPECIAL_TAGS)))]
    # Zipf-like popularity: a few tags are everywhere, most are rare.
    cum_weights = list(
        itertools.accumulate(1.0 / (rank + 1) ** 0.9 for rank in range(len(vocabulary)))
    )
    span_ms = minutes * 60_000
    counts: Counter[str] = Counter()
    by_stream: Counter[str] = Counter()
    lines = []
    ms = T0_SECONDS * 1000
    for index in range(events):
        ms = T0_SECONDS * 1000 + index * span_ms // events
        user = f"user-{rnd.randrange(users)}"
        start = ms // (WINDOW_SECONDS * 1000) * WINDOW_SECONDS
        if rnd.random() < 0.2:
            stream, value = "signups", _signup(rnd)
            counts[f"signups|{country_of(value)}|{start}"] += 1
        else:
            stream, value = "posts", _post(rnd, vocabulary, cum_weights)
            for tag in tags_of(value):
                counts[f"hashtag_posts|{tag}|{start}"] += 1
        value = {
            "event_id": f"{stream}-{index}",
            "user_id": user,
            "ts": _ts_value(ms, rnd),
            **value,
        }
        by_stream[stream] += 1
        lines.append(orjson.dumps({"stream": stream, "key": user, "value": value}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    keys = [key.split("|") for key in counts]
    return Workload(
        path=path,
        events=events,
        by_stream=dict(by_stream),
        truth=dict(counts),
        last_event_seconds=ms / 1000,
        hashtags=len({name for metric, name, _ in keys if metric == "hashtag_posts"}),
        countries=len({name for metric, name, _ in keys if metric == "signups"}),
        windows=len({start for _, _, start in keys}),
    )


def group_env(base: Mapping[str, str]) -> dict[str, str]:
    """``base`` (from ``isolated_env``) with the partitions and window settings of these tests."""
    return {
        **base,
        "SURGEWATCH_PARTITIONS": str(PARTITIONS),
        "SURGEWATCH_WINDOW_SECONDS": str(WINDOW_SECONDS),
        "SURGEWATCH_GRACE_SECONDS": str(GRACE_SECONDS),
    }


class GroupWorker(WorkerProcess):
    """A worker run in its own directory (its RocksDB data lives under ``cwd/.surgewatch``)."""

    def __init__(
        self, env: Mapping[str, str], web_port: int, log_path: Path, cwd: Path, name: str
    ) -> None:
        super().__init__(env, web_port, log_path)
        self.cwd = cwd
        self.name = name
        cwd.mkdir(parents=True, exist_ok=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, ready_timeout_seconds: float = 60.0) -> None:
        """Start ``surgewatch worker`` (the process itself, no shell) and wait for ``/metrics``."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "surgewatch", "worker", "--loglevel", "warn"],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )

        def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                return True  # exited: reported below
            scrape(self.metrics_url, timeout_seconds=1.0)
            return True

        try:
            wait_for(ready, ready_timeout_seconds, what=f"{self.name}'s /metrics")
            if self.process is None or self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
        except BaseException:
            self.stop()
            raise

    def kill(self) -> int:
        """SIGKILL the worker process (no clean shutdown, no commit) and reap it; its pid."""
        assert self.process is not None and self.process.poll() is None, f"{self.name} not running"
        pid = self.process.pid
        os.kill(pid, signal.SIGKILL)
        self.process.wait(10)
        assert self.process.returncode == -signal.SIGKILL
        self.process = None
        return pid

    def received(self, stream: str | None = None) -> float:
        """``surgewatch_events_received_total`` of one stream, or of both."""
        samples = scrape(self.metrics_url)
        streams = (stream,) if stream else ("posts", "signups")
        return sum(sample(samples, "surgewatch_events_received_total", stream=s) for s in streams)

    def late(self) -> float:
        """``surgewatch_events_late_total`` of both streams."""
        samples = scrape(self.metrics_url)
        return sum(
            sample(samples, "surgewatch_events_late_total", stream=s) for s in ("posts", "signups")
        )

    def owned(self) -> dict[str, dict[str, list[int]]]:
        """The group's assignment as this worker's Faust router knows it: url -> topic -> partitions."""
        with urllib.request.urlopen(f"{self.base_url}/router/topics", timeout=5) as response:
            found: dict[str, dict[str, list[int]]] = orjson.loads(response.read())
        return found


def stop_all(workers: Sequence[GroupWorker], timeout_seconds: float = 20.0) -> None:
    """SIGTERM every worker at once, then wait for each (SIGKILL past the deadline)."""
    running = [w.process for w in workers if w.process is not None and w.process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout_seconds
    for process in running:
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for worker in workers:
        worker.process = None


async def describe_group(bootstrap: str, group: str) -> tuple[str, int]:
    """The consumer group's state and member count, as the broker reports them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group])
        (described,) = response.groups
        _, _, state, _, _, members = described[:6]
        return str(state), len(members)
    finally:
        await admin.close()


def wait_for_stable_group(
    bootstrap: str, env: Mapping[str, str], workers: Sequence[GroupWorker], timeout_seconds: float
) -> dict[str, list[int]]:
    """Poll until the broker reports the group stable with exactly these workers, and every worker's
    router agrees on one assignment in which each of them owns partitions of both input topics and
    together they own every partition. Returns each worker's name -> its posts partitions."""
    topics = (env["SURGEWATCH_POSTS_TOPIC"], env["SURGEWATCH_SIGNUPS_TOPIC"])
    urls = {worker.base_url: worker.name for worker in workers}

    def settled() -> dict[str, list[int]] | None:
        state, members = asyncio.run(describe_group(bootstrap, env["SURGEWATCH_APP_ID"]))
        if state != "Stable" or members != len(workers):
            return None
        views = [worker.owned() for worker in workers]
        if any(view != views[0] for view in views) or set(views[0]) != set(urls):
            return None
        for topic in topics:
            if any(not owned.get(topic) for owned in views[0].values()):
                return None
            every = sorted(p for owned in views[0].values() for p in owned.get(topic, []))
            if every != list(range(PARTITIONS)):
                return None
        return {urls[url]: owned[topics[0]] for url, owned in views[0].items()}

    found: dict[str, list[int]] = wait_for(
        settled, timeout_seconds, interval_seconds=0.5, what="a stable group"
    )
    return found


@dataclass
class WindowRecords:
    """What the window-count topic held when it stopped growing."""

    records: list[tuple[str, dict[str, Any]]]
    complete: bool
    seconds: float

    def by_key(self) -> dict[str, list[dict[str, Any]]]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for key, value in self.records:
            grouped.setdefault(key, []).append(value)
        return grouped


async def _read_settled(
    bootstrap: str,
    topic: str,
    expected: set[str],
    quiet_seconds: float,
    give_up_quiet_seconds: float,
    timeout_seconds: float,
) -> WindowRecords:
    consumer = await reader_from_start(bootstrap, topic)
    started = last_new = time.monotonic()
    records: list[tuple[str, dict[str, Any]]] = []
    missing = set(expected)
    try:
        while True:
            now = time.monotonic()
            quiet = now - last_new
            if not missing and quiet >= quiet_seconds:
                break
            if quiet >= give_up_quiet_seconds or now - started >= timeout_seconds:
                break
            batch = await consumer.getmany(timeout_ms=250)
            for tp_records in batch.values():
                for record in tp_records:
                    key = record.key.decode()
                    records.append((key, orjson.loads(record.value)))
                    missing.discard(key)
                    last_new = time.monotonic()
    finally:
        await consumer.stop()
    return WindowRecords(records, not missing, time.monotonic() - started)


def read_window_records(
    bootstrap: str,
    topic: str,
    expected: set[str],
    *,
    quiet_seconds: float,
    give_up_quiet_seconds: float,
    timeout_seconds: float,
) -> WindowRecords:
    """Read the window-count topic from the start until every expected key has come and nothing new
    for ``quiet_seconds`` (re-emissions would show), or nothing new for ``give_up_quiet_seconds``
    (the pipeline has stopped publishing), or the deadline: what was read, for the assertions."""
    return asyncio.run(
        _read_settled(
            bootstrap, topic, expected, quiet_seconds, give_up_quiet_seconds, timeout_seconds
        )
    )


@dataclass
class Comparison:
    """Window records against the truth."""

    missing: dict[str, int]
    unexpected: dict[str, list[int]]
    wrong: dict[str, tuple[int, list[int]]]
    conflicting: dict[str, list[int]]
    identical_reemissions: int
    malformed: list[str]

    def ok(self) -> bool:
        return not (
            self.missing or self.unexpected or self.wrong or self.conflicting or self.malformed
        )

    def over_under(self) -> tuple[int, int]:
        """Events counted too many (largest published value above the truth) and too few (smallest
        below it, or the whole count of a missing key), summed over keys."""
        over = sum(max(g) - e for e, g in self.wrong.values() if max(g) > e)
        under = sum(e - min(g) for e, g in self.wrong.values() if min(g) < e)
        return over, under + sum(self.missing.values())

    def by_window(self) -> list[str]:
        """One line per window with a difference: its start (and minute after T0) and what differs."""
        rows: dict[int, Counter[str]] = {}
        for key, count in self.missing.items():
            row = rows.setdefault(int(key.rsplit("|", 1)[1]), Counter())
            row["missing keys"] += 1
            row["missing events"] += count
        for key, (expected, published) in self.wrong.items():
            row = rows.setdefault(int(key.rsplit("|", 1)[1]), Counter())
            row["wrong keys"] += 1
            if max(published) > expected:
                row["over keys"] += 1
                row["over events"] += max(published) - expected
            if min(published) < expected:
                row["under keys"] += 1
                row["under events"] += expected - min(published)
        for key in self.conflicting:
            rows.setdefault(int(key.rsplit("|", 1)[1]), Counter())["conflicting keys"] += 1
        return [
            f"  window {start} (minute {(start - T0_SECONDS) // 60}): "
            + ", ".join(f"{name} {n}" for name, n in sorted(row.items()))
            for start, row in sorted(rows.items())
        ]

    def describe(self, limit: int = 12) -> str:
        """A human summary of every difference (the first ``limit`` of each kind in full)."""

        def by_time(item: tuple[str, Any]) -> tuple[int, str]:
            metric_key, start = item[0].rsplit("|", 1)
            return int(start), metric_key

        over, under = self.over_under()
        wrong = sorted(self.wrong.items(), key=by_time)
        lines = [
            f"over-counted by {over} and under-counted by {under} events in all; by window:",
            *self.by_window(),
            f"missing keys (metric|key|window: expected count): {len(self.missing)}",
            *(f"  {k}: {v}" for k, v in sorted(self.missing.items(), key=by_time)[:limit]),
            f"unexpected keys: {len(self.unexpected)}",
            *(f"  {k}: {v}" for k, v in sorted(self.unexpected.items(), key=by_time)[:limit]),
            f"wrong counts (key: expected -> published, in order): {len(self.wrong)}; "
            f"the first ones above, then below the truth:",
            *[f"  {k}: {e} -> {g}" for k, (e, g) in wrong if max(g) > e][:limit],
            *[f"  {k}: {e} -> {g}" for k, (e, g) in wrong if min(g) < e][:limit],
            f"keys published with different values: {len(self.conflicting)}",
            f"identical re-emissions: {self.identical_reemissions}",
            f"malformed records: {len(self.malformed)}",
            *(f"  {m}" for m in self.malformed[:limit]),
        ]
        return "\n".join(lines)


def _count(value: Mapping[str, Any]) -> int:
    """A record's count, or -1 when it has none that is an integer (reported as malformed)."""
    count = value.get("count")
    return count if isinstance(count, int) and not isinstance(count, bool) else -1


def compare(truth: Mapping[str, int], read: WindowRecords) -> Comparison:
    """Every record checked against its key and the truth; several records for one key noted."""
    grouped = read.by_key()
    malformed = []
    for key, value in read.records:
        metric, name, start = key.rsplit("|", 2)
        wanted = {
            "metric": metric,
            "key": name,
            "window_start": int(start),
            "window_end": int(start) + WINDOW_SECONDS,
            "count": _count(value),
        }
        if value != wanted or _count(value) <= 0:
            malformed.append(f"{key}: {value}")
    missing = {key: count for key, count in truth.items() if key not in grouped}
    unexpected = {
        key: [_count(v) for v in values] for key, values in grouped.items() if key not in truth
    }
    wrong: dict[str, tuple[int, list[int]]] = {}
    conflicting: dict[str, list[int]] = {}
    reemitted = 0
    for key, values in grouped.items():
        published = [_count(v) for v in values]
        distinct = sorted(set(published))
        if len(distinct) > 1:
            conflicting[key] = published
        reemitted += len(published) - len(distinct)
        if key in truth and distinct != [truth[key]]:
            wrong[key] = (truth[key], published)
    return Comparison(missing, unexpected, wrong, conflicting, reemitted, malformed)


def received_total(workers: Sequence[GroupWorker]) -> float:
    """Events received, summed over the running workers."""
    return sum(worker.received() for worker in workers)


def watermarks_past(worker: GroupWorker, seconds: float) -> bool:
    """Both streams' watermarks on ``worker`` have passed ``seconds``."""
    samples = scrape(worker.metrics_url)
    return all(
        sample(samples, "surgewatch_watermark_seconds", stream=s) >= seconds
        for s in ("posts", "signups")
    )
