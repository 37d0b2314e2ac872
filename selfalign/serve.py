"""A small OpenAI-compatible server for an engine: `selfalign serve RUN` exposes a run's policy.

Endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/completions. One request is
generated at a time (the engine is not thread-safe); it binds to 127.0.0.1 unless told otherwise.
Good for pointing another run's black-box judge at this policy, or any OpenAI client at it.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from selfalign.engines.base import GenerationRequest


def make_server(engine, model_name: str, host: str = "127.0.0.1", port: int = 8000,
                adapter: str | None = None) -> ThreadingHTTPServer:
    """Serve the base model plus `adapter` (a LoRA folder; None: the base model)."""
    lock = threading.Lock()

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
            with lock:
                results = sorted(engine.generate([request], adapter=adapter), key=lambda r: r.sample_index)
            choices = []
            for r in results:
                reason = "length" if r.finish_reason == "length" else "stop"
                if chat:
                    choices.append({"index": r.sample_index, "finish_reason": reason,
                                    "message": {"role": "assistant", "content": r.text}})
                else:
                    choices.append({"index": r.sample_index, "finish_reason": reason, "text": r.text})
            self._send(200, {"id": f"selfalign-{time.time_ns()}", "object": "chat.completion" if chat else
                             "text_completion", "created": int(time.time()), "model": model_name,
                             "choices": choices, "usage": {"completion_tokens": sum(r.tokens for r in results)}})

    return ThreadingHTTPServer((host, port), Handler)
