"""The one table of model-addressed endpoints: which paths route across the mesh, to what, and in whose dialect.

Every path here is answered the same way: the request body's `model` field names the model (missing, empty or
`"default"`: the node's default, api/model_ids.py), the request goes to a server of that model (this node's
llama-server, or a member's through the HTTP tunnel) at the same path, and failover tries the next server when one
fails. Streamed answers are server-sent events in the path's own format (backends/streams/ keeps each one stream
across servers).

| path | family | the model must |
|---|---|---|
| `/v1/chat/completions` | OpenAI | generate (tools, `tool_choice`, `response_format`, `logprobs` pass through) |
| `/v1/chat/completions/input_tokens` | OpenAI | generate |
| `/v1/completions` | OpenAI | generate |
| `/v1/embeddings` | OpenAI | embed (a model with a pooling type, started with `--embeddings`) |
| `/v1/responses` | OpenAI | generate |
| `/v1/responses/input_tokens` | OpenAI | generate |
| `/v1/messages` | Anthropic | generate |
| `/v1/messages/count_tokens` | Anthropic | generate |
| `/v1/rerank` | OpenAI (llama-server's own rerank format) | rerank (pooling type `rank`, started with `--reranking`) |
| `/tokenize`, `/detokenize`, `/apply-template` | llama-server's own (OpenAI-shaped errors) | any |

A path not in the table is not forwarded anywhere: the API answers 404 in the shape of the family its prefix belongs
to (`/v1/messages...` Anthropic, the rest OpenAI), and a node asked for one through the tunnel answers
`not_allowed` (protocols/http-tunnel.md). llama-server's other paths (`/slots`, `/props`, `/metrics`, LoRA and control
endpoints) act on one server and never leave the machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from meshp2p.wire.tunnel import ROOT_PATHS


class Family(StrEnum):
    """Whose API a path belongs to: it decides the shape of errors and of stream events."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class Needs(StrEnum):
    """What a model must be able to do to answer a path."""

    GENERATE = "generate"
    EMBED = "embed"
    RERANK = "rerank"
    ANY = "any"


@dataclass(frozen=True)
class Endpoint:
    path: str
    family: Family
    needs: Needs
    #: Whether the answer may be a stream (`"stream": true` in the body).
    streams: bool = False


CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
EMBEDDINGS_PATH = "/v1/embeddings"
RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"
RERANK_PATH = "/v1/rerank"
ANTHROPIC_PREFIX = "/v1/messages"

_OPENAI, _ANTHROPIC = Family.OPENAI, Family.ANTHROPIC

ENDPOINTS: dict[str, Endpoint] = {e.path: e for e in (
    Endpoint(CHAT_PATH, _OPENAI, Needs.GENERATE, streams=True),
    Endpoint(CHAT_PATH + "/input_tokens", _OPENAI, Needs.GENERATE),
    Endpoint(COMPLETIONS_PATH, _OPENAI, Needs.GENERATE, streams=True),
    Endpoint(EMBEDDINGS_PATH, _OPENAI, Needs.EMBED),
    Endpoint(RESPONSES_PATH, _OPENAI, Needs.GENERATE, streams=True),
    Endpoint(RESPONSES_PATH + "/input_tokens", _OPENAI, Needs.GENERATE),
    Endpoint(MESSAGES_PATH, _ANTHROPIC, Needs.GENERATE, streams=True),
    Endpoint(MESSAGES_PATH + "/count_tokens", _ANTHROPIC, Needs.GENERATE),
    Endpoint(RERANK_PATH, _OPENAI, Needs.RERANK),
    Endpoint("/tokenize", _OPENAI, Needs.ANY),
    Endpoint("/detokenize", _OPENAI, Needs.ANY),
    Endpoint("/apply-template", _OPENAI, Needs.ANY),
)}

assert {p for p in ENDPOINTS if not p.startswith("/v1/")} <= set(ROOT_PATHS), "the tunnel must carry every path"


def endpoint(path: str) -> Endpoint | None:
    """The table's row for `path` (its query string ignored), or None when the path is not routed."""
    return ENDPOINTS.get(path.split("?", 1)[0])


def family_of(path: str) -> Family:
    """The family whose error shape `path` is answered in, routed or not (a typo under /v1/messages is
    Anthropic's 404)."""
    row = endpoint(path)
    if row is not None:
        return row.family
    return _ANTHROPIC if path == ANTHROPIC_PREFIX or path.startswith(ANTHROPIC_PREFIX + "/") else _OPENAI
