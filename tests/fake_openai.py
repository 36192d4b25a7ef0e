"""A fake OpenAI-compatible chat-completions server on loopback (stdlib http.server in a thread).

Modes (settable while it runs): ``ok`` answers "yes" when the rubric's response contains the
expected answer in ``ok_word`` and "no" otherwise; ``slow`` sleeps ``delay_s`` before answering;
``garbage`` answers HTTP 200 with a body that is not JSON; ``babble`` answers valid JSON whose
message is not a score; ``error`` answers 500 (echoing the Authorization header, as a careless
server might); ``flaky`` fails the first ``fail_first`` requests with 500, then behaves as ``ok``.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rlvr.weights.sync import free_port  # noqa: F401 (a port nothing listens on: a judge that is down)


class FakeOpenAI:
    def __init__(self, mode: str = "ok", ok_word: str = "4", delay_s: float = 2.0, fail_first: int = 0):
        self.mode, self.ok_word, self.delay_s, self.fail_first = mode, ok_word, delay_s, fail_first
        self.requests: list[dict] = []
        self.auth: list[str] = []
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake.lock:
                    fake.requests.append(body)
                    fake.auth.append(self.headers.get("Authorization", ""))
                    n = len(fake.requests)
                mode = fake.mode
                if mode == "flaky":
                    mode = "error" if n <= fake.fail_first else "ok"
                if mode == "slow":
                    time.sleep(fake.delay_s)
                    mode = "ok"
                if mode == "error":
                    return self._send(500, json.dumps({"error": {"message": f"boom; you sent {self.headers.get('Authorization')}"}}).encode())
                if mode == "garbage":
                    return self._send(200, b"<html>this is not json</html>", "text/html")
                user = body["messages"][-1]["content"]
                response_part = user.split("Response:\n", 1)[-1].split("\n\n", 1)[0]
                content = "banana bread" if mode == "babble" else ("Yes." if fake.ok_word in response_part else "No.")
                out = {"id": f"c{n}", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}}
                self._send(200, json.dumps(out).encode())

            def _send(self, code, data, ctype="application/json"):
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", ctype)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


