"""Term search over blackboard posts, ranked by how many query terms match, then by recency.

Ranking, in full:

- The query is split into **terms**: each word (a run of letters, digits or `_`), and each `"quoted phrase"` as
  one term. Case is ignored (Unicode case folding: `GPU` finds `gpu`, `STRASSE` finds `Straße`); repeated terms
  count once.
- A word term **matches** a post if a word of its text, display name or tags *starts with* it (`quant` finds
  `quantized`). A phrase matches if its words appear in a row in one of those fields, the last one as a prefix.
- The **score** is the number of distinct terms that match; a term repeated in the post counts once, so
  stuffing a post with one word does not lift it. Posts that match no term are left out.
- Results are ordered by score (highest first), then by `ts` (newest first), then by id (so ties are stable).
- An empty query (no words) is the filtered feed, newest first.

Filters (`author`, `since_ms`, `tag`) apply before ranking. `search` is pure over any posts; `search_store` asks
the store for candidates (a case-folded substring prefilter in SQLite, which is a superset of what matches) and
ranks them here. `search_store` does blocking I/O: call it through `trio.to_thread.run_sync`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from meshp2p.blackboard.store import BlackboardStore
from meshp2p.wire.blackboard import Post

DEFAULT_LIMIT = 20
#: The newest candidates `search_store` ranks: more than any sane capacity, bounded so a query stays cheap.
MAX_SCAN = 5000

_PHRASE_RE = re.compile(r'"([^"]*)"')
_WORD_RE = re.compile(r"\w+")

Term = tuple[str, ...]


def parse_query(query: str) -> list[Term]:
    """The query's distinct terms, each a tuple of case-folded words (one word, or a phrase's words)."""
    terms: list[Term] = []
    for phrase in _PHRASE_RE.findall(query):
        terms.append(tuple(_words(phrase)))
    rest = _PHRASE_RE.sub(" ", query).replace('"', " ")
    terms += [(word,) for word in _words(rest)]
    return [term for term in dict.fromkeys(terms) if term]


def score(post: Post, terms: Iterable[Term]) -> int:
    """How many of `terms` match `post` (see the module docstring)."""
    fields = [_words(post.text), _words(post.name or ""), [w for tag in post.tags for w in _words(tag)]]
    return sum(1 for term in terms if any(_matches(term, words) for words in fields))


def search(
    posts: Iterable[Post],
    query: str,
    *,
    author: str | None = None,
    since_ms: int | None = None,
    tag: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[Post]:
    """The best `limit` posts for `query` among `posts`, after the filters."""
    terms = parse_query(query)
    ranked: list[tuple[int, Post]] = []
    for post in posts:
        if author is not None and post.author != author:
            continue
        if since_ms is not None and post.ts < since_ms:
            continue
        if tag is not None and tag not in post.tags:
            continue
        n = score(post, terms) if terms else 0
        if terms and n == 0:
            continue
        ranked.append((n, post))
    ranked.sort(key=lambda item: (-item[0], -item[1].ts, item[1].id))
    return [post for _, post in ranked[: max(0, limit)]]


def search_store(
    store: BlackboardStore,
    query: str,
    *,
    author: str | None = None,
    since_ms: int | None = None,
    tag: str | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[Post]:
    """`search` over the store: SQLite narrows to posts containing some term, Python ranks them. Blocking."""
    terms = parse_query(query)
    if not terms:
        return store.feed(limit, since_ms=since_ms, author=author, tag=tag)
    # A post a term matches holds the term's first word in its case-folded text, name or tags: a superset.
    prefilter = list(dict.fromkeys(term[0] for term in terms))
    candidates = store.candidates(prefilter, limit=MAX_SCAN, since_ms=since_ms, author=author, tag=tag)
    return search(candidates, query, limit=limit)


def _words(text: str) -> list[str]:
    return _WORD_RE.findall(text.casefold())


def _matches(term: Term, words: list[str]) -> bool:
    *head, last = term
    n = len(term)
    for i in range(len(words) - n + 1):
        if words[i + n - 1].startswith(last) and all(words[i + k] == w for k, w in enumerate(head)):
            return True
    return False
