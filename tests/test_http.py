"""The OpenAI-compatible client against real HTTP servers on 127.0.0.1, and `selfalign serve`."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from selfalign import models
from selfalign.engines.base import GenerationRequest
from selfalign.engines.http_engine import EndpointError, EndpointUnavailable, HttpClient, HttpEngine


class Scripted:
    """A real server answering each POST with the next scripted reply; records what it received."""

    def __init__(self, replies=(), respond=None):
        """`respond(body) -> text`, when given, answers every request from what it asked (a model that
        follows its prompt); otherwise the scripted replies are used in order."""
        self.replies = list(replies)
        self.received = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                scripted.received.append((self.path, dict(self.headers), json.loads(body)))
                if respond:
                    kind, *args = "ok", respond(json.loads(body))
                else:
                    kind, *args = scripted.replies.pop(0) if scripted.replies else ("ok", "[1] > [2]")
                if kind == "sleep":
                    time.sleep(args[0])
                    kind, args = "ok", ["late"]
                if kind == "ok":
                    payload = json.dumps({"choices": [{"message": {"content": args[0]}, "finish_reason": "stop"}]})
                    status = 200
                elif kind == "status":
                    status, payload = args[0], json.dumps({"error": {"message": "nope"}})
                else:  # raw bytes
                    status, payload = 200, args[0]
                data = payload.encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted():
    servers = []

    def start(*replies):
        servers.append(Scripted(replies))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def client(url, **kwargs):
    return HttpClient(url, "judge-model", backoff=0.01, **{"timeout": 5.0, **kwargs})


def test_chat_sends_model_and_key_from_the_environment(scripted, monkeypatch):
    server = scripted(("ok", "[2] > [1]"))
    monkeypatch.setenv("MY_JUDGE_KEY", "sk-test-123")
    (choice,) = client(server.url, key_env="MY_JUDGE_KEY").chat([{"role": "user", "content": "rank"}], seed=3)
    assert choice["text"] == "[2] > [1]"
    path, headers, body = server.received[0]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sk-test-123"
    assert body["model"] == "judge-model" and body["seed"] == 3


def test_retries_500_timeouts_and_malformed_json_then_succeeds(scripted):
    server = scripted(("status", 500), ("raw", "{not json"), ("sleep", 1.0), ("ok", "[1] > [2]"))
    (choice,) = client(server.url, timeout=0.3, retries=3).chat([{"role": "user", "content": "x"}])
    assert choice["text"] == "[1] > [2]" and len(server.received) == 4


def test_gives_up_with_a_clear_error(scripted):
    server = scripted(("status", 503), ("status", 503))
    with pytest.raises(EndpointUnavailable, match="no usable answer after 2 tries .*HTTP 503"):
        client(server.url, retries=1).chat([{"role": "user", "content": "x"}])


@pytest.mark.parametrize("status, message", [(401, "refused the key .*MY_KEY"), (404, "was not found"),
                                             (400, "rejected the request")])
def test_4xx_is_not_retried(scripted, status, message):
    server = scripted(("status", status))
    with pytest.raises(EndpointError, match=message):
        client(server.url, key_env="MY_KEY").chat([{"role": "user", "content": "x"}])
    assert len(server.received) == 1


def test_unreachable_server_and_reply_without_choices(scripted):
    with pytest.raises(EndpointUnavailable):
        client("http://127.0.0.1:9/v1", retries=1).chat([{"role": "user", "content": "x"}])
    server = scripted(("raw", '{"id": 1}'))
    with pytest.raises(EndpointUnavailable, match="no usable choices"):
        client(server.url, retries=0).chat([{"role": "user", "content": "x"}])


def test_concurrency_limit_is_respected(scripted):
    server = scripted(*[("sleep", 0.2)] * 8)
    in_flight, peak, lock = [0], [0], threading.Lock()
    c = client(server.url, concurrency=3)

    def call(i):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return c.chat([{"role": "user", "content": str(i)}])[0]["text"]
        finally:
            with lock:
                in_flight[0] -= 1

    assert list(c.map(call, range(8))) == ["late"] * 8
    assert peak[0] == 3


def test_a_stop_asked_mid_call_sends_no_more_requests_and_keeps_the_answers(scripted):
    """The engine asks should_stop in the calling thread as answers come back (it may read the caller's
    database); requests not yet sent are not sent, answers already back are kept."""
    server = scripted(*[("sleep", 0.05)] * 12)
    engine = HttpEngine(client(server.url, concurrency=1), load_adapters=False)
    callers = []

    def should_stop():
        callers.append(threading.current_thread())
        return True  # at the first answer

    requests = [GenerationRequest(key=i, messages=[{"role": "user", "content": str(i)}]) for i in range(12)]
    kept = []
    results = engine.generate(requests, on_result=kept.append, should_stop=should_stop)
    assert callers == [threading.main_thread()]  # asked once (throttled), never from a worker thread
    assert results == kept and 1 <= len(results) <= 2  # the first answer, and one already in flight at most
    assert len(server.received) == len(results)


def test_serve_exposes_a_model_to_the_http_engine(tiny_model_dir):
    from selfalign.engines.transformers_engine import TransformersEngine
    from selfalign.serve import make_server

    model, tok = models.load(str(tiny_model_dir), device="cpu")
    server = make_server(TransformersEngine(model, tok, batch_size=4), "tiny", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        engine = HttpEngine(HttpClient(url, "tiny", retries=0))
        results = engine.generate([GenerationRequest(key="a", messages=[{"role": "user", "content": "Hi"}], n=2,
                                                     max_new_tokens=6, temperature=1.0),
                                   GenerationRequest(key="b", prompt="# Query:\nHi\n", max_new_tokens=4)])
        assert sorted((r.key, r.sample_index) for r in results) == [("a", 0), ("a", 1), ("b", 0)]
        assert all(isinstance(r.text, str) for r in results)
        with pytest.raises(EndpointError, match="HTTP 400"):
            HttpClient(url, "tiny", retries=0)._post("/chat/completions", {"messages": "not a list"})
    finally:
        server.shutdown()
        server.server_close()


def test_serve_command_answers_an_openai_client(tiny_model_dir):
    import re
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "selfalign", "serve", "--model", str(tiny_model_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+/v1)", line).group(1)
        (choice,) = HttpClient(url, "tiny", retries=0).chat([{"role": "user", "content": "Hi"}], max_tokens=5)
        assert isinstance(choice["text"], str) and choice["tokens"] is not None
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_serve_names_the_run_round_and_model_it_serves(tiny_model_dir, runs_root):
    import re
    import subprocess
    import sys

    from selfalign import config, runs

    runs.create("served", config.dumps(config.build(sets=[f"model.name={tiny_model_dir}"])))
    proc = subprocess.Popen([sys.executable, "-m", "selfalign", "serve", "served", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving run served, round 0: the base model {tiny_model_dir} as model 'served'")
        assert "None" not in line and re.search(r"http://127\.0\.0\.1:\d+/v1", line)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
