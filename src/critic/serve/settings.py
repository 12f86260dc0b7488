"""The server's settings: its limits, deadlines, key and origins."""

from dataclasses import dataclass, field


@dataclass
class ServeSettings:
    max_batch: int = 32  # texts scored together; 1 turns micro-batching off
    # How long the first request of a batch waits for company. 0: none; requests that queue while the model is busy
    # still form the next batch. On a CPU, where a batch is no faster per text, waiting only adds latency.
    max_wait_ms: float = 0.0
    max_texts: int = 64  # texts per request
    max_text_chars: int = 50_000
    max_body_bytes: int = 1_000_000
    max_upload_bytes: int = 20_000_000  # /v1/score-csv
    max_upload_rows: int = 10_000  # /v1/score-csv
    # What one request may cost: with sliding windows a text's cost grows with its length, so the characters of a
    # request are bounded too (200,000: about 50,000 tokens, some 400 windows at the default stride).
    max_request_chars: int = 200_000
    max_queued_texts: int = 4096  # texts waiting for the model; past it a request gets 503 with Retry-After
    max_in_flight: int = 256  # requests being answered at once (the probes apart); past it 503 with Retry-After
    timeout_s: float = 30.0
    upload_timeout_s: float = 600.0  # /v1/score-csv: scored in chunks, between which other requests are answered
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
