"""Prometheus' text exposition format 0.0.4, written and read here: families in, text out, and text in, families out.

Our own, not `prometheus_client`: that library keeps its metrics in a process-wide registry and brings its own
exposition server, where a node needs a few dozen numbers written on request by the console app. The rules kept
(https://prometheus.io/docs/instrumenting/exposition_formats/): one `# HELP` and one `# TYPE` line per family, its
samples together and after them; label values escaped (`\\`, `"`, newline), HELP text escaped (`\\`, newline);
values in Go's float syntax (`+Inf`, `-Inf`, `NaN`); a histogram as `_bucket{le=...}` (cumulative, `+Inf` last),
`_sum` and `_count`.

`parse` reads what llama-server's `--metrics` writes (and any other plain 0.0.4 text: labels, timestamps are
dropped), so the console can hand each local model's numbers on under our names (`relabelled`): `llamacpp:x`
becomes `meshp2p_llamacpp_x` (a colon is meant for recording rules, not for exporters) with `model="<id>"` added.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TYPES = frozenset({"counter", "gauge", "histogram", "summary", "untyped"})

Labels = tuple[tuple[str, str], ...]

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\s*(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)(?:\s+\S+)?\s*$")
_LABEL = re.compile(r'\s*(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"(?P<value>(?:[^"\\]|\\.)*)"\s*,?')


@dataclass(frozen=True)
class Sample:
    """One line: a full sample name (a histogram's `_bucket`, `_sum`, `_count` included), labels, a value."""

    name: str
    labels: Labels
    value: float


@dataclass
class Family:
    """A metric family: its name, type, help text and samples, written together."""

    name: str
    type: str
    help: str
    samples: list[Sample] = field(default_factory=list)


def labels_of(names: Sequence[str], values: Sequence[str]) -> Labels:
    return tuple(zip(names, values, strict=True))


def encode(families: Iterable[Family]) -> str:
    """The exposition text of `families` (each name once: the caller merges families of one name first)."""
    out: list[str] = []
    for family in families:
        if not _NAME.match(family.name) or family.type not in TYPES:
            raise ValueError(f"not a valid metric family: {family.name!r} of type {family.type!r}")
        out.append(f"# HELP {family.name} {_escape_help(family.help)}")
        out.append(f"# TYPE {family.name} {family.type}")
        for s in family.samples:
            out.append(f"{s.name}{_encode_labels(s.labels)} {format_value(s.value)}")
    return "\n".join(out) + "\n" if out else ""


def format_value(value: float) -> str:
    """Go's float syntax, and integers without a fraction (counters read as counts)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def _encode_labels(labels: Labels) -> str:
    if not labels:
        return ""
    parts = []
    for name, value in labels:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"not a valid label name: {name!r}")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        parts.append(f'{name}="{escaped}"')
    return "{" + ",".join(parts) + "}"


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m[1] == "n" else m[1], text)


def parse(text: str) -> list[Family]:
    """The families of an exposition text, in order. A sample with no TYPE line before it is its own `untyped`
    family; a line that does not parse is skipped (another program's output must not break our page)."""
    families: dict[str, Family] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE") and _NAME.match(parts[2]):
                family = families.setdefault(parts[2], Family(parts[2], "untyped", ""))
                rest = parts[3] if len(parts) > 3 else ""
                if parts[1] == "HELP":
                    family.help = _unescape(rest)
                elif rest in TYPES:
                    family.type = rest
            continue
        sample = _parse_sample(line)
        if sample is not None:
            families.setdefault(_family_name(sample.name, families), Family(sample.name, "untyped", "")) \
                .samples.append(sample)
    return [f for f in families.values() if f.samples]


def _parse_sample(line: str) -> Sample | None:
    m = _SAMPLE.match(line)
    if m is None:
        return None
    try:
        value = float(m["value"])  # float() reads +Inf, -Inf and NaN as Go writes them
    except ValueError:
        return None
    labels: list[tuple[str, str]] = []
    body = m["labels"] or ""
    pos = 0
    while pos < len(body.rstrip()):
        label = _LABEL.match(body, pos)
        if label is None:
            return None
        labels.append((label["name"], _unescape(label["value"])))
        pos = label.end()
    return Sample(m["name"], tuple(labels), value)


def _family_name(sample_name: str, families: Mapping[str, Family]) -> str:
    """The family a sample belongs to: its own name, or a histogram's or summary's with the suffix taken off."""
    if sample_name in families:
        return sample_name
    for suffix in ("_bucket", "_sum", "_count"):
        base = sample_name.removesuffix(suffix)
        if base != sample_name and base in families and families[base].type in ("histogram", "summary"):
            return base
    return sample_name


def relabelled(families: Iterable[Family], *, prefix: str, labels: Labels) -> list[Family]:
    """`families` renamed under `prefix` (a `vendor:` prefix becomes `vendor_`) with `labels` put first on every
    sample (replacing a label of the same name: ours say which model, whatever the program thought)."""
    names = {name for name, _ in labels}
    out = []
    for family in families:
        out.append(Family(_renamed(prefix, family.name), family.type, family.help, [
            Sample(_renamed(prefix, s.name), labels + tuple(kv for kv in s.labels if kv[0] not in names), s.value)
            for s in family.samples]))
    return out


def _renamed(prefix: str, name: str) -> str:
    return prefix + name.replace(":", "_")


def merged(families: Iterable[Family]) -> list[Family]:
    """Families of one name (the same metric of several models) as one, samples in order; the first family's
    help and type stand (a later one of another type is dropped: one name, one type)."""
    out: dict[str, Family] = {}
    for family in families:
        kept = out.get(family.name)
        if kept is None:
            out[family.name] = Family(family.name, family.type, family.help, list(family.samples))
        elif kept.type == family.type:
            kept.samples.extend(family.samples)
    return list(out.values())
