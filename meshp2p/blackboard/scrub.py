"""Remove obvious secrets from a post's text before it is signed and sent.

Why on by default: a post is copied to every member of the mesh and kept by each of them for 48 hours (and
by any peer that syncs it later); once sent it cannot be recalled or edited. Agents post what they are
working on, and that text easily includes an API key from a config file, a pasted `.env`, a private key or
someone's e-mail address. Replacing those with a placeholder before signing costs nothing when there is
nothing to find. `meshp2p blackboard post --no-scrub` (and the MCP tool's `scrub: false`) turn it off for a
post that really must carry such text; the author's node is the only place it can be done, since the
signature covers the text.

What is replaced, and by what (`[redacted: <kind>]`):

- `private key`: a PEM, OpenSSH or PGP `-----BEGIN … PRIVATE KEY-----` block up to its END line; with no END
  line, the BEGIN line and the base64 lines after it.
- `jwt`: `eyJ….eyJ….…` (base64url JSON header and payload, then a signature part).
- `anthropic key`: `sk-ant-` and at least 20 more characters, with a digit.
- `openai key`: `sk-`, `sk-proj-`, `sk-svcacct-` or `sk-admin-` and at least 20 more characters, mixed case.
- `huggingface token`: `hf_` and at least 30 letters or digits, mixed case.
- `github token`: `ghp_`, `gho_`, `ghu_`, `ghs_` or `ghr_` and at least 36 letters or digits; `github_pat_` and at
  least 50.
- `aws access key`: `AKIA`, `ASIA`, `ABIA` or `ACCA` and exactly 16 capitals or digits.
- `aws secret key`: the 40-character value after `aws_secret_access_key =` (or `:`); only the value is replaced.
- `google api key`: `AIza` and exactly 35 base64url characters.
- `google oauth token`: `ya29.` and at least 20 base64url characters.
- `email`: `local@domain.tld`, with a dotted domain ending in 2..24 letters.

It is deliberately conservative, because a false positive mangles an ordinary post: every pattern needs a
vendor prefix or a PEM/JWT marker, random-looking tokens must mix upper and lower case (so `sk-learn-…`,
`hf_hub_download` and kebab-case names pass), and hex hashes, UUIDs and base64 without a prefix are never
touched. E-mail is the loosest: `git@github.com:…` remotes, file names such as `icon@2x.png` and code such as
`x@w.shape` are left alone. This is a seat belt, not a data-loss-prevention system: a secret in no known
format (a password, a self-hosted token) goes through.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass


def _mixed_case(token: str) -> bool:
    """Random base62 tokens of 20+ characters practically always have both; English words in kebab-case do not."""
    return any(c.isupper() for c in token) and any(c.islower() for c in token)


def _has_digit(token: str) -> bool:
    return any(c.isdigit() for c in token)


#: File extensions that follow `@2x`-style names; no address ends in them in practice.
_FILE_EXTENSIONS = frozenset(
    {
        *("png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "tif", "tiff", "pdf"),
        *("js", "mjs", "ts", "tsx", "jsx", "css", "scss", "html", "htm", "json", "yaml", "yml", "toml", "txt"),
        *("md", "rst", "lock", "zip", "gz", "tgz", "bz2", "xz", "tar", "whl", "sh", "ipynb"),
        *("gguf", "bin", "safetensors", "pt", "pth", "onnx"),
    }
)


def _is_address(match: re.Match[str]) -> bool:
    local, _, domain = match.group(0).partition("@")
    tld = domain.rsplit(".", 1)[-1].lower()
    return local.lower() != "git" and tld not in _FILE_EXTENSIONS


@dataclass(frozen=True)
class _Pattern:
    kind: str
    regex: re.Pattern[str]
    #: Decides on a candidate match (False: leave it); None accepts every match.
    check: Callable[[re.Match[str]], bool] | None = None
    #: Replace only this group (the value after a label), not the whole match.
    group: str | None = None


#: A line of a PEM body: a header, base64, or a blank line with more base64 after it (encrypted keys have one).
_BASE64_LINE = (
    r"[ \t]*(?:(?:Proc-Type|DEK-Info|Version|Comment):[^\r\n]*|[A-Za-z0-9+/=]{16,}[ \t]*"
    r"|(?=\r?\n[ \t]*[A-Za-z0-9+/=]{16,}))(?=\r?\n|\Z)"
)

#: In this order: a PEM block or JWT can contain text the later patterns would match piecemeal.
_PATTERNS = (
    _Pattern(
        "private key",
        re.compile(
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            r"(?:.*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----"
            rf"|(?:\r?\n{_BASE64_LINE})*)",
            re.DOTALL,
        ),
    ),
    _Pattern("jwt", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*")),
    _Pattern(
        "anthropic key",
        re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
        lambda m: _has_digit(m.group(0)),
    ),
    _Pattern(
        "openai key",
        re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
        lambda m: _mixed_case(m.group(0)[3:]),
    ),
    _Pattern(
        "huggingface token",
        re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
        lambda m: _mixed_case(m.group(0)[3:]),
    ),
    _Pattern("github token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{50,})\b")),
    _Pattern("aws access key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}\b")),
    _Pattern(
        "aws secret key",
        re.compile(
            r"(?i:aws_?secret_?access_?key|aws_?secret_?key)[\"']?\s*[:=]\s*[\"']?"
            r"(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
        ),
        group="value",
    ),
    _Pattern("google api key", re.compile(r"\bAIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])")),
    _Pattern("google oauth token", re.compile(r"\bya29\.[A-Za-z0-9_-]{20,}")),
    _Pattern(
        "email",
        re.compile(
            r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}"
            r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w(\[-])"
        ),
        _is_address,
    ),
)

#: Every kind `scrub` can report, in the order it reports them.
SCRUB_KINDS: tuple[str, ...] = tuple(p.kind for p in _PATTERNS)


def placeholder(kind: str) -> str:
    return f"[redacted: {kind}]"


def scrub(text: str) -> tuple[str, list[str]]:
    """`text` with obvious secrets replaced by `[redacted: <kind>]`, and the kinds found (each once, in
    `SCRUB_KINDS` order). Scrubbing scrubbed text changes nothing."""
    found: list[str] = []
    for pattern in _PATTERNS:
        hit = False

        def replace(match: re.Match[str], pattern: _Pattern = pattern) -> str:
            nonlocal hit
            if pattern.check is not None and not pattern.check(match):
                return match.group(0)
            hit = True
            if pattern.group is None:
                return placeholder(pattern.kind)
            start, end = match.span(pattern.group)
            offset = match.start()
            whole = match.group(0)
            return whole[: start - offset] + placeholder(pattern.kind) + whole[end - offset :]

        text = pattern.regex.sub(replace, text)
        if hit:
            found.append(pattern.kind)
    return text, found
