"""`ft chat`: a terminal chat client for any OpenAI-compatible server (ftflow's or vLLM's).

Reads one user turn per line from stdin, streams the answer to stdout and keeps the history;
`/reset` forgets the history, `/exit` (or end of input) quits.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any, TextIO

from ftcore.errors import ServiceUnavailableError


def base_url(url: str) -> str:
    """`http://host:port`, `.../v1` or `.../v1/` all name the same API root."""
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


class ChatClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 600.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx.Client(base_url=base_url(url), headers=headers, timeout=timeout_s)

    def first_model(self) -> str:
        data = self._json(self.http.get("/models"))
        return data["data"][0]["id"]

    def stream_chat(self, model: str, messages: list[dict[str, str]], **params: Any) -> Iterator[str]:
        """The answer's text pieces as the server streams them; a 4xx raises ChatError."""
        body = {"model": model, "messages": messages, "stream": True, **params}
        with self.http.stream("POST", "/chat/completions", json=body) as response:
            if response.status_code >= 400:
                response.read()
                self._json(response)
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    return
                chunk = json.loads(data)
                if "error" in chunk:
                    raise ChatError(chunk["error"].get("message", str(chunk["error"])))
                for choice in chunk.get("choices", []):
                    text = choice.get("delta", {}).get("content")
                    if text:
                        yield text

    @staticmethod
    def _json(response: Any) -> Any:
        try:
            data = response.json()
        except ValueError:
            data = {}
        if response.status_code >= 400:
            message = (data.get("error") or {}).get("message") if isinstance(data, dict) else None
            raise ChatError(f"{response.status_code}: {message or response.text}")
        return data


class ChatError(Exception):
    """The server refused a request (shown, and the conversation goes on)."""


def chat_loop(
    client: ChatClient,
    model: str,
    system: str | None = None,
    params: dict[str, Any] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
) -> int:
    import httpx

    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    start = [{"role": "system", "content": system}] if system else []
    history = list(start)
    prompt = stdin.isatty()
    while True:
        if prompt:
            print("> ", end="", file=sys.stderr, flush=True)
        line = stdin.readline()
        if not line:
            return 0
        text = line.rstrip("\n")
        if not text.strip():
            continue
        if text.strip() == "/exit":
            return 0
        if text.strip() == "/reset":
            history = list(start)
            print("(history cleared)", file=sys.stderr, flush=True)
            continue
        turn = [*history, {"role": "user", "content": text}]
        pieces: list[str] = []
        try:
            for piece in client.stream_chat(model, turn, **(params or {})):
                pieces.append(piece)
                stdout.write(piece)
                stdout.flush()
        except ChatError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            continue  # the turn is dropped; the history stays as it was
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                f"chat: the server at {client.http.base_url} does not answer: {exc}"
            ) from exc
        stdout.write("\n")
        stdout.flush()
        history = [*turn, {"role": "assistant", "content": "".join(pieces)}]
