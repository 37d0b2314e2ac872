"""A client for any OpenAI-compatible server (vLLM's, OpenAI's, `selfalign serve`), standard library only.

Used for the black-box judge (CycleAlign) and as an `http` generation engine. The API key is read
from an environment variable named in the config at call time and is never stored or logged.
Timeouts, connection errors, 429 and 5xx are retried with exponential backoff; other 4xx answers
are the user's to fix and raise at once with a message that says how.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from selfalign.engines.base import (
    GenerationRequest,
    GenerationResult,
    OnResult,
    Progress,
    StopAsked,
    Throttled,
    load_for_training,
)
from selfalign.errors import SelfalignError

RETRYABLE = {408, 409, 425, 429, 500, 502, 503, 504}


class EndpointError(SelfalignError):
    """The server refused the request in a way retrying cannot fix (bad URL, model or key)."""


class EndpointUnavailable(SelfalignError):
    """The server did not answer usefully after every retry (timeouts, 5xx, malformed JSON)."""


class HttpClient:
    def __init__(self, base_url: str, model: str = "", *, key_env: str = "OPENAI_API_KEY", timeout: float = 60.0,
                 retries: int = 3, backoff: float = 1.0, concurrency: int = 4):
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.key_env = key_env
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.concurrency = concurrency

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.key_env, "") if self.key_env else ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = self._headers()
        data = json.dumps(body).encode()
        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
            except urllib.error.HTTPError as exc:
                detail = exc.read()[:200].decode(errors="replace")
                if exc.code in RETRYABLE:
                    last = f"HTTP {exc.code}"
                    continue
                raise EndpointError(_explain(exc.code, url, self.model, self.key_env, detail)) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = getattr(exc, "reason", None) or type(exc).__name__
                continue
            try:
                return json.loads(payload)
            except ValueError:
                last = "malformed JSON in the reply"
                continue
        raise EndpointUnavailable(f"{url} gave no usable answer after {self.retries + 1} tries (last: {last}); "
                                  "check that the server is up, or raise judge.blackbox_timeout_s")

    def _once(self, method: str, path: str, body: dict[str, Any] | None = None) -> bytes:
        """One request without retries (for calls asked once, or not idempotent everywhere); an HTTP error or no
        answer is one SelfalignError naming the URL."""
        url = f"{self.base_url}{path}"
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers=self._headers(), method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace")
            raise EndpointError(_explain(exc.code, url, self.model, self.key_env, detail)) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise EndpointUnavailable(f"{url} did not answer ({getattr(exc, 'reason', None) or exc}); check that "
                                      "the server is up") from None

    def post_text(self, path: str, body: dict[str, Any]) -> str:
        """POST for endpoints that answer in plain text (vLLM's load_lora_adapter); no retries: it is not
        idempotent on every server, and a failure here must be seen at once."""
        return self._once("POST", path, body).decode(errors="replace")

    def models(self) -> list[str]:
        """The model ids the server lists (GET /models); no retries: it is asked once, before work starts."""
        payload = self._once("GET", "/models")
        try:
            return [str(m["id"]) for m in json.loads(payload)["data"]]
        except (ValueError, KeyError, TypeError):
            raise EndpointUnavailable(f"{self.base_url}/models did not list models as an OpenAI-compatible server "
                                      "does; check the URL (it usually ends in /v1)") from None

    def chat(self, messages: list[dict[str, str]], **sampling) -> list[dict]:
        """Choices of one chat completion: each {'text', 'finish_reason', 'tokens'}."""
        return _choices(self._post("/chat/completions", self._body({"messages": messages}, **sampling)), "message")

    def complete(self, prompt: str, **sampling) -> list[dict]:
        return _choices(self._post("/completions", self._body({"prompt": prompt}, **sampling)), "text")

    def _body(self, payload: dict[str, Any], *, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
              n: int = 1, stop: Sequence[str] = (), seed: int | None = None, logprobs: bool = False,
              model: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model or self.model, **payload, "max_tokens": max_tokens,
                                "temperature": temperature, "top_p": top_p, "n": n}
        if logprobs:  # the sampled tokens' log-probabilities: chat takes a flag, completions a count
            body["logprobs"] = True if "messages" in payload else 1
        if stop:
            body["stop"] = list(stop)
        if seed is not None:
            body["seed"] = seed
        return body

    def map(self, fn: Callable, items: Sequence) -> Iterator:
        """fn over items with at most `concurrency` requests in flight; results in order (exceptions too),
        each yielded as soon as it and those before it are back, so callers store and report as they come."""
        def safe(item):
            try:
                return fn(item)
            except SelfalignError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            yield from pool.map(safe, items)


def blackbox_client(judge) -> HttpClient:
    """The client for the configured black-box judge (the config's `judge` section)."""
    return HttpClient(judge.blackbox_url, judge.blackbox_model, key_env=judge.blackbox_key_env,
                      timeout=judge.blackbox_timeout_s, retries=judge.blackbox_retries,
                      concurrency=judge.blackbox_concurrency)


def _choices(reply: dict[str, Any], kind: str) -> list[dict]:
    try:
        choices = reply["choices"]
        out = []
        for choice in choices:
            text = choice["message"]["content"] if kind == "message" else choice["text"]
            out.append({"text": text or "", "finish_reason": choice.get("finish_reason") or "stop",
                        "tokens": None, "mean_logprob": _mean_logprob(choice.get("logprobs"))})
        usage = reply.get("usage") or {}
        if len(out) == 1 and "completion_tokens" in usage:
            out[0]["tokens"] = usage["completion_tokens"]
        return out
    except (KeyError, TypeError, IndexError):
        raise EndpointUnavailable(f"the server's reply has no usable choices ({str(reply)[:120]}); is it an "
                                  "OpenAI-compatible endpoint?") from None


def _mean_logprob(logprobs: Any) -> float | None:
    """Mean of the sampled tokens' log-probabilities, from a chat reply (`content`) or a completion
    reply (`token_logprobs`); None when the server sent none."""
    if not isinstance(logprobs, dict):
        return None
    if isinstance(logprobs.get("content"), list):
        values = [t.get("logprob") for t in logprobs["content"] if isinstance(t, dict)]
    else:
        values = logprobs.get("token_logprobs") or []
    values = [v for v in values if isinstance(v, int | float)]
    return sum(values) / len(values) if values else None


def _explain(code: int, url: str, model: str, key_env: str, detail: str) -> str:
    if code in (401, 403):
        return f"{url} refused the key (HTTP {code}); set a valid key in ${key_env}"
    if code == 404:
        return f"{url} or model {model!r} was not found (HTTP 404); check judge.blackbox_url and judge.blackbox_model"
    return f"{url} rejected the request (HTTP {code}: {detail.strip()[:120]}); check the model name and settings"


class HttpEngine:
    """Generation through an OpenAI-compatible server (a policy served by vLLM, for example)."""

    name = "http"

    def __init__(self, client: HttpClient, *, load_adapters: bool = True):
        self.client = client
        self.adapter: str | None = None
        self.served_as: str | None = None  # the name the server knows the current adapter by
        self.load_adapters = load_adapters
        self.where = client.base_url
        self.trainable = None  # cfg.model loaded with transformers on the first train stage

    def generate(self, requests: Sequence[GenerationRequest], *, adapter: str | None = None,
                 on_result: OnResult | None = None, progress: Progress | None = None,
                 should_stop: StopAsked | None = None) -> list[GenerationResult]:
        self._use(adapter)
        # asked in this thread as answers come back (it may read the caller's database or block on a
        # pause); the worker threads only read the flag, so requests not yet sent are not sent
        stopping = threading.Event()
        ask = Throttled(should_stop) if should_stop else None

        def one(request: GenerationRequest) -> list[GenerationResult]:
            if stopping.is_set():
                return []  # not sent: the caller makes it another time
            started = time.perf_counter()
            kwargs = dict(max_tokens=request.max_new_tokens, temperature=request.temperature, top_p=request.top_p,
                          n=request.n, stop=request.stop, seed=request.seed, logprobs=True, model=self.served_as)
            if request.messages is not None:
                choices = self.client.chat(request.messages, **kwargs)
            else:
                choices = self.client.complete(request.prompt, **kwargs)
            seconds = time.perf_counter() - started
            return [GenerationResult(request.key, i, c["text"].strip(), c["tokens"] or len(c["text"].split()),
                                     "length" if c["finish_reason"] == "length" else "stop", c["mean_logprob"],
                                     seconds)
                    for i, c in enumerate(choices[: request.n])]

        results: list[GenerationResult] = []
        total = sum(r.n for r in requests)
        for outcome in self.client.map(one, list(requests)):
            if isinstance(outcome, Exception):
                raise outcome
            if ask and not stopping.is_set() and ask():
                stopping.set()  # answers already on their way are still kept
            for result in outcome:
                results.append(result)
                if on_result:
                    on_result(result)
                if progress:
                    progress(len(results), total)
        return results

    def _use(self, path: str | None) -> None:
        """Serve this round's adapter: vLLM's server loads it at runtime (started with --enable-lora and
        VLLM_ALLOW_RUNTIME_LORA_UPDATING=True), and requests then name it as their model. The server must
        see the same path (same machine or a shared disk)."""
        if path == self.adapter:
            return
        self.adapter = path
        if path is None or not self.load_adapters:
            self.served_as = None
            return
        import hashlib

        name = "selfalign-" + hashlib.sha256(path.encode()).hexdigest()[:12]
        self.client.post_text("/load_lora_adapter", {"lora_name": name, "lora_path": path})
        self.served_as = name

    def for_training(self, cfg, *, weights: bool = True):
        """The served model must also load here: training runs in this process."""
        if self.trainable is None:
            self.trainable = load_for_training(cfg)
        return self.trainable

    def release_memory(self) -> None:
        pass

    def close(self) -> None:
        pass
