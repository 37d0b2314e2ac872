"""A small OpenAI-compatible server for an engine: `selfalign serve RUN` exposes a run's policy.

Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions. One request is
generated at a time (the engine is not thread-safe); it binds to 127.0.0.1 unless told otherwise.
Good for pointing another run's black-box judge at this policy, or any OpenAI client at it.

With a corrector (Aligner, correction/serving.py) every reply is rewritten by a run's learned corrector
before it is returned: the corrected text is the choice's content and the reply as it came is kept in the
choice's own "original" field. The replies may come from the local engine or from any OpenAI-compatible
upstream server (`answer`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selfalign.engines.base import GenerationRequest
from selfalign.errors import SelfalignError


def make_server(engine, model_name: str, host: str = "127.0.0.1", port: int = 8000,
                adapter: str | None = None, *, answer: Callable[[GenerationRequest], list[dict]] | None = None,
                corrector=None) -> ThreadingHTTPServer:
    """Serve the base model plus `adapter` (a LoRA folder; None: the base model), or the replies of `answer`
    (a request -> [{'text', 'finish_reason', 'tokens'}] function, e.g. an upstream server); with `corrector`
    (correction.serving.Corrector) each reply is corrected before it is returned."""
    lock = threading.Lock()

    def local(request: GenerationRequest) -> list[dict]:
        with lock:
            results = sorted(engine.generate([request], adapter=adapter), key=lambda r: r.sample_index)
        return [{"text": r.text, "finish_reason": r.finish_reason, "tokens": r.tokens} for r in results]

    answer = answer or local

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):  # quiet: the caller decides what to print
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str) -> None:
            self._send(status, {"error": {"message": message, "type": "invalid_request_error"}})

        def do_GET(self):
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": model_name, "object": "model"}]})
            else:
                self._error(404, f"no route {self.path}")

        def do_POST(self):
            path = self.path.rstrip("/")
            if path not in ("/v1/chat/completions", "/v1/completions"):
                return self._error(404, f"no route {self.path}")
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                chat = path.endswith("chat/completions")
                if chat and not isinstance(body.get("messages"), list):
                    return self._error(400, "'messages' must be a list")
                if not chat and not isinstance(body.get("prompt"), str):
                    return self._error(400, "'prompt' must be a string")
                stop = body.get("stop") or []
                request = GenerationRequest(
                    key=0, messages=body["messages"] if chat else None, prompt=None if chat else body["prompt"],
                    n=int(body.get("n", 1)), max_new_tokens=int(body.get("max_tokens") or 256),
                    temperature=float(body.get("temperature", 1.0)), top_p=float(body.get("top_p", 1.0)),
                    stop=[stop] if isinstance(stop, str) else list(stop), seed=int(body.get("seed") or 0))
            except (ValueError, TypeError, KeyError) as exc:
                return self._error(400, f"bad request body: {exc}")
            try:
                replies = answer(request)
                if corrector is not None:
                    question = _question(request)
                    with lock:
                        fixes = corrector.fix_all(question, [r["text"] for r in replies])
            except SelfalignError as exc:  # the upstream failed: say so, as a gateway does
                return self._send(502, {"error": {"message": str(exc), "type": "upstream_error"}})
            choices = []
            for i, r in enumerate(replies):
                reason = "length" if r["finish_reason"] == "length" else "stop"
                text = r["text"] if corrector is None else fixes[i]["final"]
                choice = {"index": i, "finish_reason": reason}
                choice |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
                if corrector is not None:  # the reply as it came, and what the corrector did to it
                    choice["original"] = {"content": r["text"], "finish_reason": reason}
                    choice["correction"] = fixes[i]["outcome"]
                choices.append(choice)
            body = {"id": f"selfalign-{time.time_ns()}", "object": "chat.completion" if chat else "text_completion",
                    "created": int(time.time()), "model": model_name, "choices": choices,
                    "usage": {"completion_tokens": sum(r["tokens"] or 0 for r in replies)}}
            if corrector is not None:
                body["corrected_by"] = corrector.name
            self._send(200, body)

    return ThreadingHTTPServer((host, port), Handler)


def _question(request: GenerationRequest) -> str:
    """What the corrector reads as the request: the last user turn of a chat, or a completion's prompt."""
    if request.messages is None:
        return request.prompt or ""
    users = [m.get("content", "") for m in request.messages if m.get("role") == "user"]
    return users[-1] if users else ""


def build(runs_dir, name: str | None, model_name: str | None, round_k: int | None, use_corrector: bool,
          upstream_url: str | None, upstream_model: str | None, upstream_key_env: str, corrector_from: str | None,
          host: str, port: int) -> tuple[ThreadingHTTPServer, str]:
    """`selfalign serve`'s server and a sentence saying what it serves; every bad combination or unreachable
    upstream is one SelfalignError before anything listens."""
    import dataclasses

    from selfalign import config, controller, runs
    from selfalign.engines import select
    from selfalign.errors import UsageError
    from selfalign.store import open_store

    if upstream_url:
        if name or model_name or use_corrector:
            raise UsageError("--upstream-url serves another server's model: drop the run name, --model and --corrector "
                             "and name the corrector with --corrector-from RUN[:K]")
        if not upstream_model or not corrector_from:
            raise UsageError("--upstream-url needs --upstream-model (the model it serves) and --corrector-from RUN[:K]")
    elif corrector_from or upstream_model:
        raise UsageError("--corrector-from and --upstream-model go with --upstream-url; to correct a run's own "
                         "policy use `selfalign serve RUN --corrector`")
    elif not name and not model_name:
        raise UsageError("name a run (selfalign serve RUN) or a model (selfalign serve --model NAME)")
    if use_corrector and not name:
        raise UsageError("--corrector corrects a run's policy with that run's corrector: name the run")

    if upstream_url:
        from selfalign.correction import serving
        from selfalign.engines.http_engine import HttpClient

        source, k = serving.parse_source(corrector_from)
        folder = runs.locate(source, runs_dir)
        ck = serving.corrector_round(folder, k)
        answer = serving.upstream(HttpClient(upstream_url, upstream_model, key_env=upstream_key_env))
        cfg = config.load(folder.config_path)
        engine, _ = select.make(cfg)
        fixer = serving.Corrector.of_run(folder, ck, engine, cfg)
        server = make_server(engine, upstream_model, host, port, answer=answer, corrector=fixer)
        return server, (f"{upstream_model} from {upstream_url}, corrected by {fixer.name}, as model "
                        f"{upstream_model!r}")

    adapter, fixer = None, None
    cfg = config.build()
    what = f"model {model_name}"
    if name:
        folder = runs.locate(name, runs_dir)
        cfg = config.load(folder.config_path)
        with open_store(folder.db_path) as store:
            preferred = controller.best_kept_round(cfg, store, folder.adapter_rounds())
        k = folder.policy_round(round_k, preferred)
        adapter = folder.adapter_of(k)
        base = model_name or cfg.model.name
        what = f"run {name}, round {k}: " + (f"adapter {adapter} on {base}" if adapter else f"the base model {base}")
    # the run's model and engine settings; --model names another model
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name=model_name or cfg.model.name))
    if use_corrector:
        from selfalign.correction import serving

        ck = serving.corrector_round(folder, None)
        engine, _ = select.make(cfg)
        fixer = serving.Corrector.of_run(folder, ck, engine, cfg)
        what += f", corrected by {fixer.name}"
    else:
        engine, _ = select.make(cfg)
    server = make_server(engine, name or model_name, host, port, adapter=adapter, corrector=fixer)
    return server, f"{what} as model {name or model_name!r}"
