"""meshp2p: pool spare GPUs and CPUs on ordinary machines to serve LLMs behind one OpenAI-compatible API."""

__version__ = "0.1.0"
