"""Coverage-guided fuzz target (atheris) for the parser and the ingest.

Run by ``test_hostile_parse.py`` for a bounded number of inputs; run it longer by hand with
``.venv/bin/python tests/unit/events/atheris_target.py -max_total_time=600``. Each input gives
three values: its raw bytes; an event whose fields come from the input, so that inputs get past
the JSON decoder (which is not instrumented) into the code after it; and a value of
``tests/hostile.py`` cut short. All three go to both parsers and, as one batch, to the ingest of
both streams. Any exception, or a verdict that breaks the contract, is a crash.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["surgewatch"]):
    from surgewatch.events.model import MAX_VALUE_BYTES, Post, Rejected, Signup
    from surgewatch.events.parse import parse_post, parse_signup
    from surgewatch.ingest import StreamIngest

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
from tests.hostile import REASONS, corpus

NOW = 1_736_900_000.0
TS = 1_736_899_200.0
NUMBERS = [TS, TS * 1000, -0.0, 1e308, 2**64, 10**400, float("nan"), 946_684_800, NOW + 86_401,
           "2025-01-15T00:00:00Z", True]  # fmt: skip
INGESTS = {stream: StreamIngest(stream, 60, 30, 4, 1) for stream in ("posts", "signups")}
SEEDS = [h.value for h in corpus(TS)]


def check(raw: bytes) -> None:
    for parse, kind in ((parse_post, Post), (parse_signup, Signup)):
        result = parse(raw, NOW)
        if isinstance(result, Rejected):
            assert result.reason.value in REASONS, result
            assert (result.reason.value == "too_large") == (len(raw) > MAX_VALUE_BYTES)
            result.detail.encode()
        else:
            assert type(result) is kind, result


def structured(data: atheris.FuzzedDataProvider) -> bytes:
    """An event built from the input: ids, ``ts``, text and tags of fuzzed Unicode."""
    body: dict[str, object] = {
        "event_id": data.ConsumeUnicodeNoSurrogates(data.ConsumeIntInRange(0, 130)),
        "user_id": data.ConsumeUnicodeNoSurrogates(data.ConsumeIntInRange(0, 130)),
        "ts": data.PickValueInList(NUMBERS),
    }
    if data.ConsumeBool():
        body["text"] = data.ConsumeUnicodeNoSurrogates(data.ConsumeIntInRange(0, 400))
    if data.ConsumeBool():
        body["hashtags"] = [
            data.ConsumeUnicodeNoSurrogates(data.ConsumeIntInRange(0, 20))
            for _ in range(data.ConsumeIntInRange(0, 32))
        ]
    if data.ConsumeBool():
        body["country"] = data.ConsumeUnicodeNoSurrogates(3)
    return json.dumps(body, ensure_ascii=data.ConsumeBool()).encode()


def test_one_input(data_bytes: bytes) -> None:
    data = atheris.FuzzedDataProvider(data_bytes)
    values = [data_bytes, structured(data)]
    if data_bytes:
        values.append(SEEDS[data_bytes[0] % len(SEEDS)][: len(data_bytes) * 64])
    for raw in values:
        check(raw)
    for ingest in INGESTS.values():
        outcome, _ = ingest.process(0, values, 0, len(values) - 1, None, NOW)
        assert outcome.received == len(values)
        assert outcome.counted + outcome.late + len(outcome.rejected) == len(values)
        assert len({index for index, _ in outcome.rejected}) == len(outcome.rejected)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
