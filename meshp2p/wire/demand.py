"""The `demand` gossip body: one node's API requests per minute per model id, over its last minute.

Sent on the mesh's demand topic (wire/gossip.py carries it); mesh/demand.py counts the requests and merges the
reports. The writer cleans the rates the way mesh/demand.py cleans what it merges (`clean_rates`: rates that are
negative, zero, NaN or infinite, model ids that are empty or over MAX_MODEL_ID_CHARS, and all but the
MAX_MODELS_PER_REPORT hottest models are dropped; rates above MAX_REQ_PER_MIN are clamped), so a body it writes
always decodes. The reader (`demand_from_body`) is strict instead: a malformed body is rejected whole, as
`malformed`. Unknown body keys are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from meshp2p.wire.errors import WireError

DEMAND_TYPE = "demand"
MAX_MODELS_PER_REPORT = 64
MAX_MODEL_ID_CHARS = 128
#: Far above any real mesh; only there so a hostile or buggy report cannot push sums to infinity.
MAX_REQ_PER_MIN = 1_000_000.0


def valid_model_id(model_id: object) -> bool:
    """A model id a report may carry."""
    return type(model_id) is str and 0 < len(model_id) <= MAX_MODEL_ID_CHARS


def clean_rates(rates: Mapping[str, float]) -> dict[str, float]:
    """The usable part of a report: see the module docstring for what is dropped and clamped."""
    clean: dict[str, float] = {}
    for model_id, rate in rates.items():
        value: object = rate
        if not valid_model_id(model_id) or type(value) not in (int, float):
            continue
        number = float(rate)
        if math.isfinite(number) and number > 0:
            clean[model_id] = min(number, MAX_REQ_PER_MIN)
    if len(clean) > MAX_MODELS_PER_REPORT:
        hottest = sorted(clean.items(), key=lambda mr: (-mr[1], mr[0]))[:MAX_MODELS_PER_REPORT]
        clean = dict(hottest)
    return clean


def demand_to_body(rates: Mapping[str, float]) -> dict[str, Any]:
    """The `demand` gossip body for our rates; cleaned the same way receivers clean, so it always decodes."""
    return {"rates": clean_rates(rates)}


def demand_from_body(body: object) -> dict[str, float]:
    """Strict reader for a `demand` body: WireError("malformed") on anything malformed."""
    if type(body) is not dict:
        raise WireError("malformed", "demand body is not a map")
    rates: object = body.get("rates")
    if type(rates) is not dict:
        raise WireError("malformed", "demand body has no 'rates' map")
    if len(rates) > MAX_MODELS_PER_REPORT:
        raise WireError("malformed", f"demand body has {len(rates)} models > {MAX_MODELS_PER_REPORT}")
    result: dict[str, float] = {}
    for model_id, rate in rates.items():
        if not valid_model_id(model_id):
            raise WireError("malformed",
                            f"demand model id {model_id!r} is not 1..{MAX_MODEL_ID_CHARS} characters of text")
        if type(rate) is not float or not math.isfinite(rate) or rate < 0:
            raise WireError("malformed", f"demand rate for {model_id!r} is not a finite float >= 0: {rate!r}")
        result[model_id] = rate
    return result
