"""Who may use this node's API: API keys (hashes only at rest), the per-request gate, rate limits and usage."""
