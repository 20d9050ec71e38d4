"""A small OpenAI-compatible chat-completions server on 127.0.0.1: `POST /v1/chat/completions`, `GET /v1/models`.

Backed by a local transformers causal LM (`agentrl judge serve --model PATH`), or by any function from
messages to reply text (tests use rule-based "judges" behind real HTTP).

>>> with JudgeServer(reply=lambda messages: '{"score": 1, "rationale": "ok"}') as server:   # doctest: +SKIP
...     JudgeClient(JudgeConfig(base_url=server.base_url, cache=None)).score_step(x)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[list[dict[str, Any]]], str]


class TransformersReply:
    """The reply of a local causal LM (path or HF id), via the judge's transformers backend."""

    def __init__(self, model: str, max_new_tokens: int = 64) -> None:
        from agentrl.rewards.judge import TransformersChatBackend

        self.backend = TransformersChatBackend(model, max_new_tokens)

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        return self.backend.complete(messages, timeout_s=60.0)


class JudgeServer:
    """Serve `reply(messages) -> text` as chat completions on 127.0.0.1:`port` (0: any free port).

    `requests` holds every request body received (tests count them); `delay_s` makes each reply slow."""

    def __init__(self, reply: Reply, *, port: int = 0, model_name: str = "local-judge", delay_s: float = 0.0) -> None:
        self.reply, self.model_name, self.delay_s = reply, model_name, delay_s
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> JudgeServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="judge-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> JudgeServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def serve_forever(self) -> None:
        self._httpd.serve_forever()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: the CLI prints its own line per request
                pass

            def _send(self, code: int, obj: dict[str, Any]) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.model_name, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, {"error": {"message": f"no route {self.path}"}})
                    return
                try:
                    req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    messages = req["messages"]
                except (ValueError, KeyError, TypeError) as e:
                    self._send(400, {"error": {"message": f"bad request body: {e}"}})
                    return
                with server._lock:
                    server.requests.append(req)
                if server.delay_s:
                    time.sleep(server.delay_s)
                try:
                    text = server.reply(messages)
                except Exception as e:  # the client sees a 500 with the reason, the server keeps serving
                    self._send(500, {"error": {"message": f"{type(e).__name__}: {e}"}})
                    return
                self._send(200, {
                    "id": f"chatcmpl-{len(server.requests)}", "object": "chat.completion", "created": int(time.time()),
                    "model": req.get("model", server.model_name),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                })

        return Handler
