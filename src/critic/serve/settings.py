"""The server's settings: its limits, deadlines, key and origins. Each limit carries its help, from which `critic
serve` makes its flag (`max_in_flight` -> `--max-in-flight`, `timeout_s` -> `--timeout`)."""

from dataclasses import dataclass, field, fields


def limit(default, help: str):
    """A setting that `critic serve` offers as a flag under "limits"."""
    return field(default=default, metadata={"help": help})


@dataclass
class ServeSettings:
    max_batch: int | None = None  # texts scored together; 1 turns micro-batching off; None: batching.max_batch_for
    # How long the first request of a batch waits for company. 0: none; requests that queue while the model is busy
    # still form the next batch. On a CPU, where a batch is no faster per text, waiting only adds latency.
    max_wait_ms: float = 0.0
    max_texts: int = limit(64, "texts per request (more: 422)")
    max_text_chars: int = limit(50_000, "characters per text (more: 422)")
    max_body_bytes: int = limit(1_000_000, "request body size (more: 413)")
    # What one request may cost: with sliding windows a text's cost grows with its length, so the characters of a
    # request are bounded too (200,000: about 50,000 tokens, some 400 windows at the default stride).
    max_request_chars: int = limit(
        200_000,
        "characters in all texts of one request (more: 413); bounds a request's cost, which grows with length "
        "under --long-reviews windows",
    )
    max_queued_texts: int = limit(4096, "texts waiting for the model (more: 503 with Retry-After, at once)")
    max_in_flight: int = limit(
        256, "requests answered at once, counted once their body has arrived, the probes apart (more: 503)"
    )
    max_in_flight_per_client: int = limit(
        128,
        "requests one client address may have open at once, from its headers on (more: 503); behind a proxy, "
        "uvicorn reads the address from X-Forwarded-For when the proxy is at --forwarded-allow-ips",
    )
    # Bodies are held in memory while they arrive (uploads go to a temporary file instead): across all requests at
    # most this much, so that many slow senders cannot fill the server's memory, and a quarter of it from one address.
    max_buffered_bytes: int = limit(
        64_000_000, "request bodies held in memory at once, all requests together; a quarter from one address (503)"
    )
    body_timeout_s: float = limit(10.0, "seconds a request's body may take to arrive (more: 408)")
    timeout_s: float = limit(30.0, "seconds from a request's body to its answer (more: 504)")
    max_queued_explains: int = limit(4, "explanations waiting or running at once (more: 503 with Retry-After)")
    max_upload_bytes: int = limit(20_000_000, "/v1/score-csv body size (more: 413)")
    max_upload_rows: int = limit(
        10_000, "rows per /v1/score-csv upload (more: 413; `critic predict --file` takes any size)"
    )
    # An upload's cost, like a request's, grows with its characters: 5,000,000 is 25 requests' worth, about 3,800
    # IMDB reviews (1,300 characters on average). Without it one upload carried 100 requests' worth.
    max_upload_chars: int = limit(5_000_000, "characters in an upload's review column (more: 413)")
    max_upload_columns: int = limit(100, "columns of an uploaded CSV (more: 413)")
    upload_body_timeout_s: float = limit(120.0, "seconds an upload's body may take to arrive (more: 408)")
    upload_timeout_s: float = limit(
        600.0,
        "seconds from an upload's body to its answer (more: 504); it is scored in chunks, and single requests "
        "are answered between them",
    )
    api_key: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    # Host headers answered; any other gets 400. `critic serve` on a loopback address answers only its own names,
    # so that a page on another site cannot reach it through DNS rebinding.
    allowed_hosts: list[str] = field(default_factory=lambda: ["*"])
    # A labels store (a file or a database URL) whose queue receives the unsure answers: those below the confidence
    # that shows store_min_accuracy on validation, whatever the client asked, and a store_sample share of the others
    store: str | None = None
    store_min_accuracy: float = 0.95
    store_sample: float = 0.02
    # What the server sees (serve/watch.py): the unsure share at watch_min_accuracy and the class mix of recent
    # answers; a drift score every watch_drift_every answers (0: none)
    watch: bool = False
    watch_min_accuracy: float = 0.95
    watch_drift_every: int = 500
    # Where the model has a cascade (inference/cascade.py): its cheap stage answers the reviews it is sure of
    cascade: bool = True


def limits() -> list:
    """The settings offered as flags, in order."""
    return [f for f in fields(ServeSettings) if "help" in f.metadata]


def flag(name: str) -> str:
    """The flag of a setting: `timeout_s` -> `--timeout`."""
    return "--" + name.removesuffix("_s").replace("_", "-")
