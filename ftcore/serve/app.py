"""The OpenAI-compatible HTTP API over a serving backend: /v1/models, /v1/completions,
/v1/chat/completions (streamed as server-sent events with `stream: true`) and /health.

Every bad request is answered with a 4xx and an OpenAI-style error body; the server keeps serving.
A key, when set, is required as `Authorization: Bearer KEY` on /v1 routes and is never logged.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request  # module level: FastAPI resolves the handlers' annotations here
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ftcore.serve.backend import RequestError, Sampling


class _Request(BaseModel):
    # unknown OpenAI fields (user, presence_penalty, ...) are accepted and ignored, as vLLM does
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, gt=0)
    max_completion_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=-1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="one answer per request")


class CompletionRequest(_Request):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0, description="0 with echo: score the prompt only")
    logprobs: int | None = Field(None, ge=0, le=20, description="top tokens per position (OpenAI legacy)")
    echo: bool = False


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    chat_template_kwargs: dict[str, Any] = Field(default_factory=dict)


def _error(status: int, message: str, param: str | None = None, code: str | None = None):
    from fastapi.responses import JSONResponse

    kinds = {401: "authentication_error", 404: "NotFoundError", 500: "server_error"}
    kind = kinds.get(status, "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": code or status}}
    return JSONResponse(body, status_code=status)


def _validation_message(exc: ValidationError) -> tuple[str, str | None]:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"], where or None


def _text_of(message: ChatMessage) -> dict[str, Any]:
    """A message for the chat template: content parts of type text are joined; others refused."""
    content = message.content
    if isinstance(content, list):
        texts = []
        for part in content:
            if part.get("type") != "text":
                raise RequestError(f"messages: content part type {part.get('type')!r} is not supported")
            texts.append(str(part.get("text", "")))
        content = "".join(texts)
    return {**message.model_dump(exclude_none=True), "content": content or ""}


def unauthorized(request: Request, wanted: bytes | None) -> Any:
    """The 401 answer for a /v1 request without `Authorization: Bearer <wanted>`, else None."""
    if wanted is None or not request.url.path.startswith("/v1"):
        return None
    header = request.headers.get("authorization", "")
    given = header[7:].strip().encode() if header.lower().startswith("bearer ") else b""
    if hmac.compare_digest(given, wanted):
        return None
    return _error(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")


def create_app(backend: Any, api_key: str | None = None) -> Any:
    """The FastAPI app serving `backend` (see TransformersBackend for what it must offer)."""
    from fastapi import FastAPI
    from fastapi.responses import StreamingResponse

    app = FastAPI(title="ftflow OpenAI-compatible server", docs_url=None, redoc_url=None)
    wanted = api_key.encode() if api_key else None

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        refused = unauthorized(request, wanted)
        return refused if refused is not None else await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        names = backend.model_names()
        created = int(time.time())
        data = [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "ftflow",
                "root": name,
                "parent": None if name == names[0] else names[0],
                "max_model_len": backend.max_model_len,
            }
            for name in names
        ]
        return {"object": "list", "data": data}

    async def parse(request: Request, kind: type[_Request]) -> _Request:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(f"the request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        try:
            return kind.model_validate(body)
        except ValidationError as exc:
            message, param = _validation_message(exc)
            raise RequestError(message, param=param) from exc

    def resolve(req: _Request, prompt_ids: list[int], default_max: int | None) -> tuple[str, Sampling]:
        names = backend.model_names()
        model = req.model or names[0]
        if model not in names:
            raise RequestError(
                f"The model `{model}` does not exist; served: {', '.join(names)}",
                404,
                "model",
                "model_not_found",
            )
        limit = backend.max_model_len
        if len(prompt_ids) >= limit:
            raise RequestError(
                f"This model's maximum context length is {limit} tokens. However, your prompt has "
                f"{len(prompt_ids)} tokens; shorten it.",
                param="messages" if isinstance(req, ChatRequest) else "prompt",
                code="context_length_exceeded",
            )
        room = limit - len(prompt_ids)
        max_tokens = req.max_completion_tokens or req.max_tokens or min(default_max or room, room)
        if max_tokens > room:
            raise RequestError(
                f"'max_tokens' is too large: {max_tokens}. This model's maximum context length is {limit} "
                f"tokens and your request has {len(prompt_ids)} input tokens.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        defaults = backend.defaults()
        stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
        top_k = req.top_k if req.top_k is not None else defaults.get("top_k", 0)
        sampling = Sampling(
            max_tokens=max_tokens,
            temperature=req.temperature if req.temperature is not None else defaults.get("temperature", 1.0),
            top_p=req.top_p if req.top_p is not None else defaults.get("top_p", 1.0),
            top_k=max(int(top_k), 0),
            stop=stop,
            seed=req.seed,
        )
        return model, sampling

    async def answer(req: _Request, prompt_ids: list[int], default_max: int | None, chat: bool):
        model, sampling = resolve(req, prompt_ids, default_max)
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        pieces = backend.generate(model, prompt_ids, sampling)
        if req.stream:
            usage = bool((req.stream_options or {}).get("include_usage"))
            events = _sse(pieces, rid, created, model, chat, usage)
            return StreamingResponse(events, media_type="text/event-stream")
        texts, last = [], None
        async for piece in pieces:
            texts.append(piece.text)
            last = piece
        text = "".join(texts)
        choice: dict[str, Any] = {"index": 0, "finish_reason": last.finish_reason, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return {
            "id": rid,
            "object": "chat.completion" if chat else "text_completion",
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": _usage(last),
        }

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        req = await parse(request, CompletionRequest)
        prompts = _prompts(req.prompt, backend)
        if len(prompts) == 1 and not (req.echo or req.logprobs is not None or req.max_tokens == 0):
            return await answer(req, prompts[0][1], 16, chat=False)  # OpenAI's default max_tokens
        if req.stream:
            message = "stream: not with several prompts, echo, logprobs or max_tokens 0"
            raise RequestError(message, param="stream")
        return await scored(req, prompts)

    async def scored(req: CompletionRequest, prompts: list[tuple[str | None, list[int]]]) -> dict[str, Any]:
        """Completions with OpenAI's legacy `echo` and `logprobs` (lm-eval's loglikelihood requests),
        one choice per prompt; max_tokens 0 scores the prompt without generating."""
        choices, used, names = [], [0, 0], backend.model_names()
        model = req.model or names[0]
        for index, (text, ids) in enumerate(prompts):
            model, sampling = resolve(req.model_copy(update={"max_tokens": req.max_tokens or None}), ids, 16)
            new_ids, answer_text, finish = [], "", "length"
            if req.max_tokens != 0:
                async for piece in backend.generate(model, ids, sampling):
                    answer_text += piece.text
                    if piece.finish_reason is not None:
                        new_ids, finish = piece.token_ids, piece.finish_reason
            if text is None:
                text = backend.text_of(ids)
            logprobs = None
            if req.logprobs is not None:
                if not hasattr(backend, "logprobs"):
                    raise RequestError("logprobs: not offered by this backend", param="logprobs")
                logprobs = await _logprobs(backend, model, ids, new_ids, req.logprobs, req.echo, text)
            choices.append(
                {
                    "index": index,
                    "text": (text if req.echo else "") + answer_text,
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            )
            used[0] += len(ids)
            used[1] += len(new_ids)
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": {"prompt_tokens": used[0], "completion_tokens": used[1], "total_tokens": sum(used)},
        }

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        req = await parse(request, ChatRequest)
        messages = [_text_of(m) for m in req.messages]
        ids = backend.chat_prompt(messages, req.chat_template_kwargs)
        return await answer(req, ids, None, chat=True)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return _error(exc.status, str(exc), exc.param, exc.code)

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception):
        return _error(500, f"the server failed on this request: {type(exc).__name__}: {exc}")

    return app


def _prompts(prompt: Any, backend: Any) -> list[tuple[str | None, list[int]]]:
    """(text or None, token ids) per prompt: a string, token ids, or a batch of either."""
    if isinstance(prompt, str):
        batch: list[Any] = [prompt]
    elif prompt and all(isinstance(p, int) for p in prompt):
        batch = [prompt]
    else:
        batch = list(prompt)
    if not batch:
        raise RequestError("prompt: empty", param="prompt")
    out = []
    for item in batch:
        ids = backend.text_prompt(item) if isinstance(item, str) else list(item)
        if not ids:
            raise RequestError("prompt: empty", param="prompt")
        out.append((item if isinstance(item, str) else None, ids))
    return out


async def _logprobs(
    backend: Any, model: str, ids: list[int], new_ids: list[int], top: int, echo: bool, text: str
) -> dict[str, Any]:
    """OpenAI's legacy logprobs object over the completion (and the prompt, with echo): tokens,
    token_logprobs, top_logprobs (None for the first prompt token), text_offset."""
    full = ids + list(new_ids)
    scores = await backend.logprobs(model, full, top)  # one entry per token after the first
    start = 0 if echo else len(ids)
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    offset = 0 if echo else len(text)
    for position in range(start, len(full)):
        piece = backend.token_text(full[position])
        tokens.append(piece)
        offsets.append(offset)
        offset += len(piece)
        if position == 0:
            token_logprobs.append(None)
            top_logprobs.append(None)
            continue
        value, best = scores[position - 1]
        token_logprobs.append(value)
        ranked: dict[str, float] = {}
        for token_id, logprob in best[: max(top, 1)] if top else []:
            ranked.setdefault(backend.token_text(token_id), logprob)  # the likelier of equal texts
        top_logprobs.append(ranked)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": offsets,
    }


def _usage(last: Any) -> dict[str, int]:
    return {
        "prompt_tokens": last.prompt_tokens,
        "completion_tokens": last.completion_tokens,
        "total_tokens": last.prompt_tokens + last.completion_tokens,
    }


async def _sse(
    pieces: AsyncIterator[Any], rid: str, created: int, model: str, chat: bool, include_usage: bool
) -> AsyncIterator[bytes]:
    """Server-sent events as OpenAI streams them: `data: {chunk}` lines, then `data: [DONE]`."""
    kind = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        body = {"id": rid, "object": kind, "created": created, "model": model, "choices": choices, **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()

    def choice(text: str | None, finish: str | None, first: bool = False) -> dict[str, Any]:
        if not chat:
            return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}
        delta: dict[str, Any] = {"role": "assistant", "content": ""} if first else {}
        if text:
            delta["content"] = text
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    try:
        if chat:
            yield event([choice(None, None, first=True)])
        async for piece in pieces:
            if piece.text:
                yield event([choice(piece.text, None)])
            if piece.finish_reason is not None:
                yield event([choice(None, piece.finish_reason)])
                if include_usage:
                    yield event([], usage=_usage(piece))
        yield b"data: [DONE]\n\n"
    except Exception as exc:  # after the 200 went out: the error travels as an event
        yield f"data: {json.dumps({'error': {'message': str(exc), 'type': 'server_error'}})}\n\n".encode()
        yield b"data: [DONE]\n\n"
    finally:
        await pieces.aclose()  # a client that left stops the generation at once
