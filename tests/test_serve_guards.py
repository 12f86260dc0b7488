"""The second security review's findings against the server: a key holder is never locked out, a body is bounded
before anything is held for it, every request's work is bounded. Each test failed on the code before its fix (the
docstring says how); none depends on timing: a refusal is read from the socket, a wait is for a metric."""

import asyncio
import csv
import io
import socket
import threading
import urllib.parse

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from servers import peak_rss_growth, start_server, stop_server, wait_until

from critic.inference.predict import Classifier
from critic.serve import ServeSettings, create_app
from critic.serve.batching import Busy, MicroBatcher

KEY = "guard-test-key"
KEYED = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
def guarded_server(toy_model):
    """A keyed server with small limits, so that each can be reached with a handful of connections."""
    url, process = start_server(
        toy_model,
        "--api-key-env",
        "CRITIC_TEST_KEY",
        "--max-in-flight",
        "8",
        "--max-in-flight-per-client",
        "4",
        "--body-timeout",
        "2",
        "--max-buffered-bytes",
        "2000000",
        "--max-queued-explains",
        "0",
        env={"CRITIC_TEST_KEY": KEY},
    )
    yield url, process
    stop_server(process)


def stalled(url: str, path: str, length: int, sent: bytes = b"", key: str | None = None, source="127.0.0.1"):
    """A connection that declares a body of `length` bytes, sends `sent` of it and stalls; from `source`."""
    address = urllib.parse.urlsplit(url)
    sock = socket.create_connection((address.hostname, address.port), timeout=20, source_address=(source, 0))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {length}\r\n" + (f"X-API-Key: {key}\r\n" if key else "") + "\r\n"
    )
    sock.sendall(head.encode() + sent)
    return sock


def status(sock: socket.socket) -> int:
    """The status the server answers on `sock` (waiting up to the socket's timeout: no answer fails the test)."""
    with sock:
        return int(sock.recv(65536).split(b" ", 2)[1])


def counted(url: str, path: str, code: int) -> float:
    """Requests to `path` answered `code` so far, from the metrics."""
    prefix = f'critic_requests_total{{path="{path}",status="{code}"}}'
    lines = httpx.get(f"{url}/metrics", headers=KEYED, timeout=10).text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(prefix))


def keyed_predict(url: str) -> int:
    return httpx.post(f"{url}/v1/predict", json={"text": "a great fun film"}, headers=KEYED, timeout=20).status_code


def test_keyless_senders_are_answered_401_before_their_body_and_hold_nothing(guarded_server):
    """Before: a keyless request held an in-flight place from its headers until the 31 s deadline, so 256 of them
    answered every key holder 503; here 8 places, and 21 stalled senders without the key, one an upload."""
    url, _ = guarded_server
    socks = [stalled(url, "/v1/predict", 1000, b"{") for _ in range(20)]
    socks.append(stalled(url, "/v1/score-csv", 19_000_000, b"review\n" * 9000))
    assert [status(sock) for sock in socks] == [401] * 21
    assert keyed_predict(url) == 200
    assert counted(url, "/v1/predict", 401) >= 20


def test_a_body_where_no_route_takes_one_is_refused_unread(guarded_server):
    """Before: a probe read a 1 MB body first (700 stalled ones held +700 MB); now 405 before a byte of it."""
    assert status(stalled(guarded_server[0], "/healthz", 1_000_000)) == 405


def test_a_body_that_stalls_is_answered_408_at_its_read_timeout(guarded_server):
    """Before: a body that never came held its place until the scoring deadline (31 s), then 504."""
    assert status(stalled(guarded_server[0], "/v1/predict", 1000, b"{", key=KEY)) == 408


def test_one_address_cannot_take_every_place(guarded_server):
    """Two addresses stall 6 keyed bodies each: 4 of each are held (reading), the other 2 refused at once; a third
    address is answered meanwhile. Before: the 8 stalled bodies took every in-flight place, and it got 503."""
    url, _ = guarded_server
    before = counted(url, "/v1/predict", 503)
    socks = [
        stalled(url, "/v1/predict", 1000, b"{", key=KEY, source=source)
        for source in ("127.0.0.2", "127.0.0.3")
        for _ in range(6)
    ]
    wait_until(lambda: counted(url, "/v1/predict", 503) - before == 4)  # every stalled request has arrived
    assert keyed_predict(url) == 200
    assert sorted(status(sock) for sock in socks) == [408] * 8 + [503] * 4


def test_bodies_held_at_once_are_bounded_across_requests_and_per_address(guarded_server):
    """2,000,000 bytes in all, 1,000,000 from one address: of two declared 900,000-byte bodies from one address one
    is refused; a third address finds the budget full once two are held. Before: no bound (16 stalled uploads held
    +351 MB)."""
    url, _ = guarded_server
    sources = ("127.0.0.4", "127.0.0.4", "127.0.0.5", "127.0.0.6")
    socks = [stalled(url, "/v1/predict", 900_000, b"{", key=KEY, source=source) for source in sources]
    assert sorted(status(sock) for sock in socks) == [408, 408, 503, 503]
    metrics = httpx.get(f"{url}/metrics", headers=KEYED).text
    assert "critic_request_body_bytes_held 0.0" in metrics  # all given back


def test_the_metrics_and_the_schema_need_the_key(guarded_server):
    url, _ = guarded_server
    for path in ("/metrics", "/openapi.json", "/docs"):
        assert httpx.get(f"{url}{path}").status_code == 401
        assert httpx.get(f"{url}{path}", headers=KEYED).status_code == 200
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}  # open to probes, naming nothing


def test_a_full_explanation_queue_refuses_at_once(guarded_server):
    """--max-queued-explains 0: every explanation is refused 503 with Retry-After, and predictions go on."""
    url, _ = guarded_server
    response = httpx.post(f"{url}/v1/explain", json={"text": "a great film"}, headers=KEYED)
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert keyed_predict(url) == 200


def test_a_host_not_allowed_is_refused(guarded_server):
    """A server on a loopback address answers only its own names: a page elsewhere cannot reach it through DNS
    rebinding."""
    url, _ = guarded_server
    assert httpx.get(f"{url}/healthz", headers={"Host": "attacker.example"}).status_code == 400
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_a_loopback_server_answers_each_of_its_own_names_and_no_other(classifier):
    """Before: bound to ::1, the server refused its own Host, [::1]."""
    from critic.serve.server import bound_to

    with TestClient(create_app(classifier, bound_to("::1", ServeSettings()))) as c:
        for name in ("127.0.0.1:8000", "localhost", "[::1]:8000"):
            assert c.get("/healthz", headers={"Host": name}).status_code == 200, name
        assert c.get("/healthz", headers={"Host": "attacker.example"}).status_code == 400
    assert bound_to("0.0.0.0", ServeSettings()).allowed_hosts == ["*"]


def test_a_header_of_a_million_columns_is_refused_cheaply(guarded_server):
    """Before: a 1.5 M-column header was parsed whole (+544 MB); now 413 from its first line's length."""
    url, process = guarded_server
    body = ",".join(f"c{i}" for i in range(1_500_000)).encode() + b"\nx\n"

    def upload():
        return httpx.post(
            f"{url}/v1/score-csv", content=body, headers={"content-type": "text/csv", **KEYED}, timeout=60
        )

    growth, response = peak_rss_growth(process.pid, upload)
    assert response.status_code == 413 and "first line is over 65,536 bytes" in response.json()["detail"]
    assert growth < 100e6, f"{growth / 1e6:.0f} MB"


# ---------------------------------------------------------------------------------------------- in the process


@pytest.fixture(scope="module")
def classifier(toy_model):
    return Classifier.load(toy_model, precision="fp32")


def test_an_explanation_whose_request_gave_up_never_runs_and_the_queue_is_bounded():
    """Before: explanations queued without bound on the model's thread and ran after their 504."""
    release, ran = threading.Event(), []

    def job(name):
        ran.append(name)
        if name == "first":
            release.wait(10)
        return name

    async def scenario():
        batcher = MicroBatcher(lambda texts: np.zeros((len(texts), 2)), max_exclusive=2)
        await batcher.start()
        first = asyncio.ensure_future(batcher.run_exclusive(job, "first"))
        await asyncio.sleep(0)  # submitted: the model's thread is held by it
        with pytest.raises(asyncio.TimeoutError):
            await batcher.run_exclusive(job, "gave up", timeout=0.01)
        third = asyncio.ensure_future(batcher.run_exclusive(job, "third"))
        await asyncio.sleep(0)
        with pytest.raises(Busy, match="2 jobs are waiting for the model"):
            await batcher.run_exclusive(job, "one too many")
        release.set()
        assert await asyncio.gather(first, third) == ["first", "third"]
        await batcher.stop()

    asyncio.run(scenario())
    assert ran == ["first", "third"]


def upload(client, text: str, **params):
    return client.post("/v1/score-csv", content=text, headers={"content-type": "text/csv"}, params=params)


def test_an_uploads_characters_and_columns_are_bounded(classifier):
    """Before: an upload carried 100 requests' worth of characters, and any number of columns."""
    settings = ServeSettings(max_upload_chars=100, max_upload_columns=3)
    with TestClient(create_app(classifier, settings)) as c:
        response = upload(c, "review\n" + "a great fun film\n" * 7)
        assert response.status_code == 413
        assert "112 characters in column 'review'; the limit is 100 per upload" in response.json()["detail"]
        response = upload(c, "review,a,b,c\nfine,1,2,3\n")
        assert response.status_code == 413 and "4 columns; the limit is 3" in response.json()["detail"]
        assert upload(c, "review,a,b\nfine,1,2\n").status_code == 200


def test_an_upload_is_scored_in_chunks_of_32_whatever_max_batch_is(classifier):
    """Before: with max_batch 1 (the CPU default) each text was a batch of its own: 64 batches here, not 2."""
    with TestClient(create_app(classifier, ServeSettings(max_batch=1))) as c:
        response = upload(c, "review\n" + "a great fun film\n" * 64)
        assert response.status_code == 200 and len(response.text.splitlines()) == 65
        batches = [line for line in c.get("/metrics").text.splitlines() if line.startswith("critic_batch_texts_count")]
        assert batches == ["critic_batch_texts_count 2.0"]


def test_every_cell_of_a_scored_upload_is_neutralised_the_header_too(classifier):
    """Before: the header's cells were written as they came."""
    with TestClient(create_app(classifier, ServeSettings())) as c:
        header = next(csv.reader(io.StringIO(upload(c, 'review,"=HYPERLINK(""x"")"\na great film,1\n').text)))
        assert header == ["review", '\'=HYPERLINK("x")', "label", "p_negative", "p_positive"]


def test_an_upload_must_say_it_is_csv(classifier):
    """Before: any Content-Type was read as CSV, so a cross-site text/plain form reached a keyless server."""
    with TestClient(create_app(classifier, ServeSettings())) as c:
        response = c.post("/v1/score-csv", content="review\nfine\n", headers={"content-type": "text/plain"})
        assert response.status_code == 415 and "text/csv" in response.json()["detail"]


def test_a_stream_of_distinct_thresholds_is_cached_within_a_bound(classifier):
    """Before: every distinct min_accuracy was computed on the event loop and kept forever."""
    with TestClient(create_app(classifier, ServeSettings())) as c:
        for target in np.linspace(0.9, 0.99, 140):  # more distinct targets than the cache keeps
            body = {"text": "a great film", "min_accuracy": float(target)}
            assert c.post("/v1/predict", json=body).status_code == 200
    assert len(classifier._thresholds) <= 128


@pytest.mark.slow
def test_the_key_is_in_no_environment_a_worker_inherits(toy_model):
    """Before: the key travelled to the workers in CRITIC_SERVE_SETTINGS (and the variable that held it with them),
    readable in /proc/PID/environ of every worker."""
    import psutil

    url, process = start_server(
        toy_model, "--workers", "2", "--api-key-env", "CRITIC_TEST_KEY", env={"CRITIC_TEST_KEY": KEY}
    )
    try:
        workers = psutil.Process(process.pid).children(recursive=True)
        assert workers
        for worker in workers:
            assert KEY.encode() not in open(f"/proc/{worker.pid}/environ", "rb").read()
        assert keyed_predict(url) == 200
    finally:
        stop_server(process)
