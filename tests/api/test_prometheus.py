"""The exposition text we write parses with prometheus_client's own parser, and llama-server's page (recorded from
b11434 with `--metrics` after one chat completion) comes back under our names with its model label."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from meshp2p.api.metrics import Counter, Histogram, gauge
from meshp2p.api.prometheus import Family, Sample, encode, format_value, merged, parse, relabelled

LLAMA_SERVER_PAGE = (Path(__file__).parent / "samples" / "llama-server-b11434.metrics").read_text()


def _parsed(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_counters_gauges_and_histograms_parse_with_prometheus_client() -> None:
    requests = Counter("meshp2p_requests_total", "Requests.", ("model", "route"))
    requests.inc("tiny", "local")
    requests.inc("tiny", "local", amount=2)
    requests.inc('we"ird\\model\nname', "peer")
    latency = Histogram("meshp2p_request_duration_seconds", "Latency.", ("model",), (0.1, 1.0))
    for value in (0.05, 0.5, 5.0):
        latency.observe(value, "tiny")
    text = encode([requests.family(), latency.family(),
                   gauge("meshp2p_peers", "Peers.\nSecond line \\ kept.", [((), 3.0)])])

    families = _parsed(text)
    counted = {tuple(sorted(s.labels.items())): s.value for s in families["meshp2p_requests"].samples}
    assert counted == {(("model", "tiny"), ("route", "local")): 3.0,
                       (("model", 'we"ird\\model\nname'), ("route", "peer")): 1.0}
    buckets = {s.labels["le"]: s.value for s in families["meshp2p_request_duration_seconds"].samples
               if s.name.endswith("_bucket")}
    assert buckets == {"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}
    sums = {s.name: s.value for s in families["meshp2p_request_duration_seconds"].samples
            if not s.name.endswith("_bucket")}
    assert sums == {"meshp2p_request_duration_seconds_sum": 5.55, "meshp2p_request_duration_seconds_count": 3.0}
    assert families["meshp2p_peers"].documentation == "Peers.\nSecond line \\ kept."


def test_values_are_written_as_go_floats() -> None:
    assert [format_value(v) for v in (3.0, 0.25, math.inf, -math.inf, math.nan, 1e300)] == [
        "3", "0.25", "+Inf", "-Inf", "NaN", "1e+300"]


def test_llama_servers_page_is_renamed_and_labelled_with_its_model() -> None:
    ours = relabelled(parse(LLAMA_SERVER_PAGE), prefix="meshp2p_", labels=(("model", "tiny-dense"),))
    theirs = relabelled(parse(LLAMA_SERVER_PAGE), prefix="meshp2p_", labels=(("model", "tiny-other"),))
    families = _parsed(encode(merged([*ours, *theirs])))
    prompt = families["meshp2p_llamacpp_prompt_tokens"]
    assert prompt.type == "counter"
    assert {s.labels["model"]: s.value for s in prompt.samples} == {"tiny-dense": 53.0, "tiny-other": 53.0}
    assert families["meshp2p_llamacpp_requests_processing"].type == "gauge"
    assert not any(":" in name for name in families)
    assert len(parse(LLAMA_SERVER_PAGE)) == 15


def test_a_foreign_page_with_labels_timestamps_and_junk_is_read_as_far_as_it_makes_sense() -> None:
    page = ('# HELP x_seconds A histogram.\n# TYPE x_seconds histogram\n'
            'x_seconds_bucket{le="1",model="theirs"} 2 1700000000\nx_seconds_bucket{le="+Inf",model="theirs"} 3\n'
            'x_seconds_sum{model="theirs"} 4.5\nx_seconds_count{model="theirs"} 3\n'
            'not a sample line\nloose{a="b\\"c"} NaN\n')
    families = parse(page)
    assert [(f.name, f.type, len(f.samples)) for f in families] == [("x_seconds", "histogram", 4),
                                                                     ("loose", "untyped", 1)]
    assert families[1].samples[0].labels == (("a", 'b"c'),)
    out = relabelled(families, prefix="meshp2p_", labels=(("model", "ours"),))
    assert out[0].samples[0] == Sample("meshp2p_x_seconds_bucket", (("model", "ours"), ("le", "1")), 2.0)
    parsed = _parsed(encode(out))
    assert {s.labels["model"] for s in parsed["meshp2p_x_seconds"].samples} == {"ours"}


def test_merging_keeps_one_type_per_name() -> None:
    a = Family("m", "counter", "first", [Sample("m", (("k", "1"),), 1.0)])
    b = Family("m", "counter", "second", [Sample("m", (("k", "2"),), 2.0)])
    c = Family("m", "gauge", "other type", [Sample("m", (("k", "3"),), 3.0)])
    (only,) = merged([a, b, c])
    assert only.help == "first" and [s.value for s in only.samples] == [1.0, 2.0]
