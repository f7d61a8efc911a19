"""Live load for the soak benchmark: post and signup events stamped with the wall clock, produced
at a steady rate by a process of their own.

The population is the ``baseline`` scenario's: its countries, languages and signup sources, its
Zipf-drawn hashtag vocabulary, plus a steady stream of brand-new tags. Every tick the producer
sends what is due as one record batch per partition (the partition Kafka's default partitioner
picks for the ``user_id`` key). It never bursts more than a second's worth to catch up: a backlog
beyond that is dropped and counted, so the rate the worker sees stays steady.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import random
import time
from bisect import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from surgewatch.partitioner import KafkaPartitioner
from surgewatch.simulate import get_scenario
from surgewatch.simulate.vocabulary import vocabulary, zipf_cumulative_weights

#: The producer sends what is due every tick, a record batch per partition: 5,000 events a tick
#: at 20k/s, as a producer lingering 250 ms would. The embedded broker's fetches slow down with
#: every batch a partition holds (``bench/broker_fetch.py``): at 50 ms, the ten-minute soak's own
#: broker turned into its bottleneck (see the README's Soak section).
TICK_SECONDS = 0.25
#: A producer further behind its schedule than this drops the backlog (counted as shortfall)
#: rather than bursting to catch up: the point is a steady rate.
MAX_BEHIND_SECONDS = 1.0
#: Clients send their events a little late: ``ts`` is now minus up to this much.
TS_JITTER_SECONDS = 0.5
#: Produce batches in flight before the producer waits for the oldest acknowledgement.
MAX_IN_FLIGHT_BATCHES = 256
#: Share of tagged posts whose tags are only in ``text`` (the simulator's ``text_tag_share``).
TEXT_TAG_SHARE = 0.15
#: Share of posts that carry a country, and of signups whose code is written in lower case.
POST_COUNTRY_SHARE = 0.9
LOWER_CASE_COUNTRY_SHARE = 0.02
#: What people write around their tags, by language.
PHRASES: dict[str, tuple[str, ...]] = {
    "zh": ("今天的分享", "记录一下", "周末愉快", "求推荐", "打卡"),
    "en": ("today's share", "weekend vibes", "so good", "any tips?", "love this"),
    "ja": ("今日の記録", "おすすめ"),
    "ko": ("오늘의 기록", "추천"),
    "th": ("วันนี้", "แนะนำ"),
    "vi": ("hôm nay", "gợi ý"),
    "de": ("heute", "Wochenende"),
    "fr": ("aujourd'hui", "week-end"),
}


def normalised_cumulative(weights: Sequence[float]) -> list[float]:
    """Cumulative weights scaled to end at 1.0, so ``bisect(cum, random())`` draws by weight."""
    cum = list(itertools.accumulate(weights))
    return [w / cum[-1] for w in cum]


class LiveEvents:
    """Post and signup values of the ``baseline`` scenario's population, stamped with a given time.

    Hashtags: the simulator's 50,000-tag Zipf vocabulary, plus the brand-new tags the caller asks
    for (a vocabulary word and a serial number: never seen before, never seen again).
    """

    def __init__(self, seed: int, run: str) -> None:
        scenario = get_scenario("baseline")
        self.rand = random.Random(seed).random
        self.run = run
        self.countries = scenario.countries
        self.post_cum = normalised_cumulative([c.post_share for c in self.countries])
        self.signup_cum = normalised_cumulative([c.signup_share for c in self.countries])
        self.users = scenario.users
        self.vocab = vocabulary()
        zipf = zipf_cumulative_weights(len(self.vocab))
        self.vocab_cum = [w / zipf[-1] for w in zipf]
        self.count_cum = normalised_cumulative(scenario.hashtag_count_weights)
        self.sources = [name for name, _ in scenario.signup_sources]
        self.sources_cum = normalised_cumulative([w for _, w in scenario.signup_sources])
        self.platforms = [name for name, _ in scenario.signup_platforms]
        self.platforms_cum = normalised_cumulative([w for _, w in scenario.signup_platforms])
        self.posts = 0
        self.signups = 0
        self.new_tags = 0

    @staticmethod
    def in_text(tag: str) -> str:
        """``#tag``, or the ``#话题#`` style for CJK tags."""
        return "#" + tag if tag.isascii() else "#" + tag + "#"

    def post(self, ts: float, new_tag: bool) -> tuple[bytes, bytes]:
        """Key and value of one post; ``new_tag`` adds a hashtag nobody used before."""
        rand = self.rand
        vocab = self.vocab
        r = rand()
        # Heavy users post most: index ~ users * U**2 puts half the posts on a quarter of them.
        user_id = f"u{int(self.users * r * r)}"
        tags = [
            vocab[bisect(self.vocab_cum, rand())] for _ in range(bisect(self.count_cum, rand()))
        ]
        if new_tag:
            self.new_tags += 1
            tags.append(f"{vocab[int(rand() * len(vocab))]}{self.new_tags}")
        country = self.countries[bisect(self.post_cum, rand())]
        phrases = PHRASES.get(country.lang, PHRASES["en"])
        phrase = phrases[int(rand() * len(phrases))]
        self.posts += 1
        value: dict[str, Any] = {
            "event_id": f"p{self.run}-{self.posts}",
            "user_id": user_id,
            "ts": ts,
            "lang": country.lang,
        }
        if tags and rand() < TEXT_TAG_SHARE:
            value["text"] = phrase + " " + " ".join([self.in_text(tag) for tag in tags])
        else:
            value["text"] = phrase
            value["hashtags"] = tags
        if rand() < POST_COUNTRY_SHARE:
            value["country"] = country.code
        return user_id.encode(), orjson.dumps(value)

    def signup(self, ts: float) -> tuple[bytes, bytes]:
        """Key and value of one signup of a brand-new user."""
        rand = self.rand
        self.signups += 1
        user_id = f"n{self.run}-{self.signups}"
        country = self.countries[bisect(self.signup_cum, rand())]
        code = country.code.lower() if rand() < LOWER_CASE_COUNTRY_SHARE else country.code
        value = {
            "event_id": f"s{self.run}-{self.signups}",
            "user_id": user_id,
            "ts": ts,
            "country": code,
            "source": self.sources[bisect(self.sources_cum, rand())],
            "platform": self.platforms[bisect(self.platforms_cum, rand())],
            "lang": country.lang,
        }
        return user_id.encode(), orjson.dumps(value)


@dataclass(frozen=True, slots=True)
class Workload:
    """What the producer sends: rates in events (or new tags) per second, for ``seconds``."""

    bootstrap: str
    posts_topic: str
    signups_topic: str
    post_rate: float
    signup_rate: float
    new_tag_rate: float
    seconds: float
    seed: int
    run: str
    #: Seconds between the producer's sends (one record batch per partition each).
    tick_seconds: float = TICK_SECONDS


@dataclass(frozen=True, slots=True)
class ProducerCounters:
    """Shared with the producer process, which alone writes them."""

    posts: ctypes.c_longlong  # acknowledged by the broker
    signups: ctypes.c_longlong
    shortfall: ctypes.c_longlong  # events dropped because the producer fell behind its schedule
    new_tags: ctypes.c_longlong
    started: ctypes.c_double  # wall time of the first tick, 0 before
    finished: ctypes.c_double  # wall time once everything is acknowledged, 0 before
    cpu_seconds: ctypes.c_double  # the producer's own CPU time, set when it finishes

    @classmethod
    def create(cls, ctx: Any) -> ProducerCounters:
        ints = [ctx.Value("q", 0, lock=False) for _ in range(4)]
        return cls(*ints, *(ctx.Value("d", 0.0, lock=False) for _ in range(3)))

    @property
    def produced(self) -> int:
        return int(self.posts.value + self.signups.value)


class Schedule:
    """How many events of a steady rate are due at a time, dropping a backlog over a second."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.taken = 0
        self.dropped = 0

    def due(self, elapsed_seconds: float) -> int:
        due = int(self.rate * elapsed_seconds) - self.taken
        excess = due - int(self.rate * MAX_BEHIND_SECONDS)
        if excess > 0:
            self.dropped += excess
            self.taken += excess
            due -= excess
        self.taken += due
        return due


def run_producer(workload: Workload, counters: ProducerCounters) -> None:
    """Producer process entry point."""
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the whole process group
        asyncio.run(produce_live(workload, counters))


async def produce_live(workload: Workload, counters: ProducerCounters) -> None:
    """Send live events at the workload's rates, a record batch per partition per tick."""
    producer = AIOKafkaProducer(
        bootstrap_servers=workload.bootstrap,
        acks=1,
        enable_idempotence=False,
        max_batch_size=512 * 1024,
        linger_ms=0,
    )
    await producer.start()
    try:
        topics = (workload.posts_topic, workload.signups_topic)
        partitioners = {
            topic: KafkaPartitioner({topic: sorted(await producer.partitions_for(topic))}).partition
            for topic in topics
        }
        events = LiveEvents(workload.seed, workload.run)
        in_flight: deque[tuple[asyncio.Future[Any], str, int]] = deque()

        def settle() -> None:
            while in_flight and in_flight[0][0].done():
                future, topic, count = in_flight.popleft()
                future.result()  # raises if the broker refused the batch
                target = counters.posts if topic == workload.posts_topic else counters.signups
                target.value += count

        async def send(topic: str, partition: int, batch: Any) -> None:
            future = await producer.send_batch(batch, topic, partition=partition)
            in_flight.append((future, topic, batch.record_count()))
            if len(in_flight) > MAX_IN_FLIGHT_BATCHES:
                await asyncio.wait([in_flight[0][0]])
            settle()

        posts, signups = Schedule(workload.post_rate), Schedule(workload.signup_rate)
        new_tags = Schedule(workload.new_tag_rate)
        jitter = random.Random(workload.seed + 1).random
        started = time.time()
        counters.started.value = started
        while (elapsed := time.time() - started) < workload.seconds:
            fresh = new_tags.due(elapsed)
            for topic, count in (
                (topics[0], posts.due(elapsed)),
                (topics[1], signups.due(elapsed)),
            ):
                partition_of = partitioners[topic]
                open_batches: dict[int, Any] = {}
                now = time.time()
                for index in range(count):
                    ts = round(now - jitter() * TS_JITTER_SECONDS, 3)
                    if topic == topics[0]:
                        key, value = events.post(ts, new_tag=index < fresh)
                    else:
                        key, value = events.signup(ts)
                    partition = partition_of(topic, key)
                    batch = open_batches.get(partition)
                    if batch is None:
                        batch = open_batches[partition] = producer.create_batch()
                    if batch.append(key=key, value=value, timestamp=int(ts * 1000)) is None:
                        await send(topic, partition, batch)
                        batch = open_batches[partition] = producer.create_batch()
                        batch.append(key=key, value=value, timestamp=int(ts * 1000))
                for partition, batch in open_batches.items():
                    await send(topic, partition, batch)
            counters.new_tags.value = events.new_tags
            counters.shortfall.value = posts.dropped + signups.dropped
            tick = workload.tick_seconds
            ticks = (time.time() - started) // tick + 1
            await asyncio.sleep(max(0.0, started + ticks * tick - time.time()))
        await producer.flush()
        if in_flight:
            await asyncio.wait([future for future, _, _ in in_flight])
        settle()
        counters.cpu_seconds.value = time.process_time()
        counters.finished.value = time.time()
    finally:
        await producer.stop()
