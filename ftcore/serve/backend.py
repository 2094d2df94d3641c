"""The transformers serving backend: one model (plus unmerged LoRA adapters), one generation at a time.

Generation runs in one worker thread that takes requests in arrival order, so requests never share
the model's state (the active adapter) and memory stays bounded; each request's tokens come back to
the event loop through its own asyncio queue. vLLM serves the same OpenAI API from its own process
(ftcore/serve/vllm.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("ftcore.serve")

# a scored token: its log-probability, and the most likely tokens at its place as (id, logprob)
Scored = tuple[float, list[tuple[int, float]]]


class RequestError(Exception):
    """A request the server cannot serve as asked: answered with a 4xx OpenAI error, never a crash."""

    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.code = status, param, code


@dataclass
class Sampling:
    """How to generate one answer (OpenAI request fields, resolved against the model's defaults)."""

    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


@dataclass
class Chunk:
    """A piece of the answer; the last one has `finish_reason` set and the token counts."""

    text: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    token_ids: list[int] = field(default_factory=list)  # the last chunk: every generated id


@dataclass
class _Job:
    model: str | None  # adapter name; None: the base model
    prompt_ids: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue
    cancel: threading.Event = field(default_factory=threading.Event)
    score_top: int | None = None  # set: score prompt_ids (one forward pass) instead of generating

    def send(self, kind: str, value: Any = None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: the server is stopping
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


def _stream_hook(job: _Job):  # -> BaseStreamer
    from transformers.generation.streamers import BaseStreamer

    class Streamer(BaseStreamer):
        """Sends each new token id to the request; the first call carries the prompt, skipped."""

        def __init__(self) -> None:
            self.prompt_seen = False

        def put(self, value: Any) -> None:
            if not self.prompt_seen:
                self.prompt_seen = True
                return
            job.send("tokens", [int(t) for t in value.reshape(-1).tolist()])

        def end(self) -> None:
            pass

    return Streamer()


def _cancel_hook(job: _Job):  # -> StoppingCriteria
    import torch
    from transformers import StoppingCriteria

    class Cancelled(StoppingCriteria):
        """Stops generating once the request no longer needs tokens (stop string, client gone)."""

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            return torch.full((input_ids.shape[0],), job.cancel.is_set(), dtype=torch.bool)

    return Cancelled()


class TransformersBackend:
    """A Hugging Face model folder served with transformers' `generate` (CPU or one GPU)."""

    name = "transformers"

    def __init__(
        self,
        model_path: str | Path,
        served_name: str,
        loras: dict[str, Path] | None = None,
        trust_remote_code: bool = False,
        max_model_len: int | None = None,
    ) -> None:
        from transformers import GenerationConfig

        from ftcore.modeling import load_model, load_tokenizer

        self.served_name = served_name
        self.path = Path(model_path)
        self.tokenizer = load_tokenizer(self.path, trust_remote_code)
        model = load_model(self.path, trust_remote_code)
        self.loras = dict(loras or {})
        if self.loras:
            from peft import PeftModel

            items = list(self.loras.items())
            model = PeftModel.from_pretrained(model, str(items[0][1]), adapter_name=items[0][0])
            for name, path in items[1:]:
                model.load_adapter(str(path), adapter_name=name)
            model.eval()
        self.model = model
        try:
            self.generation_config = GenerationConfig.from_pretrained(self.path)
        except OSError:
            self.generation_config = GenerationConfig()
        eos = self.generation_config.eos_token_id
        if eos is None:
            eos = self.tokenizer.eos_token_id
        self.eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        self.pad_id = self.tokenizer.pad_token_id
        config = getattr(self.model, "config", None)
        limit = getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        self.max_model_len = min(limit, max_model_len) if max_model_len else int(limit)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._work, name="ftflow-generate", daemon=True)
        self._worker.start()

    # --- what the app asks -------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """The base first, then each adapter: the names a request's `model` field may take."""
        return [self.served_name, *self.loras]

    def defaults(self) -> dict[str, Any]:
        """Sampling defaults from the model's generation_config.json (as vLLM reads them)."""
        cfg = self.generation_config
        raw = json.loads((self.path / "generation_config.json").read_text()) if self._has_gen_file() else {}
        out: dict[str, Any] = {}
        if raw.get("do_sample") is False:
            out["temperature"] = 0.0
        elif "temperature" in raw:
            out["temperature"] = float(cfg.temperature)
        for key in ("top_p", "top_k"):
            if key in raw and raw[key] is not None:
                out[key] = raw[key]
        return out

    def _has_gen_file(self) -> bool:
        return (self.path / "generation_config.json").is_file()

    def chat_prompt(self, messages: list[dict[str, Any]], template_kwargs: dict[str, Any]) -> list[int]:
        """The chat messages rendered by the model's own chat_template, as token ids."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise RequestError("this model has no chat_template; use /v1/completions with a prompt")
        try:
            encoded = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True, **template_kwargs
            )
        except Exception as exc:  # the template rejects the conversation (roles, content)
            raise RequestError(
                f"messages: the chat template cannot render them: {exc}", param="messages"
            ) from exc
        return list(encoded["input_ids"])

    def text_prompt(self, prompt: str) -> list[int]:
        return list(self.tokenizer.encode(prompt))

    async def generate(self, model: str, prompt_ids: list[int], sampling: Sampling) -> AsyncIterator[Chunk]:
        """The answer as text pieces; stops at an eos id of generation_config, a stop string or
        max_tokens. Stop strings are never sent, not even in part: text that could begin one is held
        back until it cannot."""
        job = _Job(
            model=None if model == self.served_name else model,
            prompt_ids=prompt_ids,
            sampling=sampling,
            loop=asyncio.get_running_loop(),
            events=asyncio.Queue(),
        )
        self._jobs.put(job)
        ids: list[int] = []
        sent = 0
        finish: str | None = None
        stops = [s for s in sampling.stop if s]
        try:
            while finish is None:
                kind, value = await job.events.get()
                if kind == "error":
                    raise value
                if kind == "done":
                    finish = "length" if len(ids) >= sampling.max_tokens else "stop"
                    tokens = ids
                else:
                    tokens = []
                    for token in value:
                        ids.append(token)
                        if token in self.eos_ids:
                            finish = "stop"
                            break
                        if len(ids) >= sampling.max_tokens:
                            finish = "length"
                            break
                    tokens = ids
                text = self._decode([t for t in tokens if t not in self.eos_ids])
                cut = _find_stop(text, stops, sent)
                if cut is not None:
                    text, finish = text[:cut], "stop"
                if finish is not None:
                    job.cancel.set()
                    yield Chunk(text[sent:], finish, len(prompt_ids), len(ids), list(ids))
                    return
                safe = _safe_end(text, stops)
                if safe > sent:
                    yield Chunk(text[sent:safe])
                    sent = safe
        finally:
            job.cancel.set()  # client gone or answer complete: the worker stops generating

    async def logprobs(self, model: str, ids: list[int], top: int) -> list[Scored]:
        """For each token after the first: its log-probability given the tokens before it, and the
        `top` most likely tokens there as (id, logprob), from one forward pass (OpenAI's echo +
        logprobs, which lm-eval's loglikelihood tasks need)."""
        job = _Job(
            model=None if model == self.served_name else model,
            prompt_ids=ids,
            sampling=Sampling(max_tokens=0),
            loop=asyncio.get_running_loop(),
            events=asyncio.Queue(),
            score_top=top,
        )
        self._jobs.put(job)
        kind, value = await job.events.get()
        if kind == "error":
            raise value
        return value

    def text_of(self, ids: list[int]) -> str:
        """A prompt given as token ids, as text (echo)."""
        return self.tokenizer.decode(ids)

    def token_text(self, token_id: int) -> str:
        """One token as text (a piece of a multi-byte character shows as U+FFFD, as in vLLM)."""
        return self.tokenizer.decode([token_id])

    def _decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def close(self) -> None:
        self._jobs.put(None)

    # --- the worker thread -------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if job.cancel.is_set():  # the client left while waiting its turn
                continue
            try:
                if job.score_top is not None:
                    job.send("scored", self._score(job))
                    continue
                self._generate(job)
                job.send("done")
            except Exception as exc:  # reported to that request; the server keeps serving
                log.exception("generation failed")
                job.send("error", exc)

    def _generate(self, job: _Job) -> None:
        import torch
        from transformers import StoppingCriteriaList

        s = job.sampling
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([job.prompt_ids], device=device)
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "max_new_tokens": s.max_tokens,
            "eos_token_id": self.eos_ids or None,
            "pad_token_id": self.pad_id,
            "streamer": _stream_hook(job),
            "stopping_criteria": StoppingCriteriaList([_cancel_hook(job)]),
        }
        if s.temperature > 0:
            kwargs.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=s.top_k or 0)
            if s.seed is not None:
                torch.manual_seed(s.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.no_grad(), self._adapter(job):
            self.model.generate(**kwargs)

    def _adapter(self, job: _Job) -> contextlib.AbstractContextManager:
        """The request's model: its LoRA adapter active, or all adapters off for the base."""
        if not self.loras:
            return contextlib.nullcontext()
        if job.model is None:
            return self.model.disable_adapter()
        self.model.set_adapter(job.model)
        return contextlib.nullcontext()

    def _score(self, job: _Job) -> list[Scored]:
        import torch

        device = next(self.model.parameters()).device
        input_ids = torch.tensor([job.prompt_ids], device=device)
        with torch.no_grad(), self._adapter(job):
            logits = self.model(input_ids=input_ids, attention_mask=torch.ones_like(input_ids)).logits[0]
        logp = torch.log_softmax(logits.float(), dim=-1)
        k = max(int(job.score_top or 0), 1)
        top_values, top_ids = logp[:-1].topk(k, dim=-1)
        chosen = logp[:-1].gather(1, input_ids[0, 1:].unsqueeze(1)).squeeze(1)
        return [
            (float(chosen[i]), list(zip(top_ids[i].tolist(), top_values[i].tolist(), strict=True)))
            for i in range(len(job.prompt_ids) - 1)
        ]


def _find_stop(text: str, stops: list[str], sent: int) -> int | None:
    """Where the first stop string starts in `text` (searching only where a new one can be)."""
    if not stops:
        return None
    start = max(0, sent - max(map(len, stops)))
    found = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(found) if found else None


def _safe_end(text: str, stops: list[str]) -> int:
    """How much of `text` can be sent: not an incomplete character, not a possible stop's start."""
    end = len(text)
    while end and text[end - 1] == "\ufffd":  # a multi-byte character still being generated
        end -= 1
    whole = text[:end]
    for stop in stops:
        held = next((n for n in range(min(len(stop) - 1, len(whole)), 0, -1) if whole.endswith(stop[:n])), 0)
        end = min(end, len(whole) - held)
    return end


BACKENDS: dict[str, type] = {"transformers": TransformersBackend}  # in-process backends
OUT_OF_PROCESS = ("vllm",)  # its own server in its own virtualenv: ftcore.serve.vllm


def backend_name(requested: str, vllm_python: str | None = None) -> str:
    """serve.backend resolved: 'auto' is vLLM when its interpreter exists, else transformers."""
    if requested == "auto":
        from ftcore.serve.vllm import vllm_available

        return "vllm" if vllm_available(vllm_python) else "transformers"
    return requested


def pick_backend(name: str) -> type:
    """The in-process backend class for serve.backend ('auto' here means transformers; vLLM runs as
    its own process, see ftcore.serve.vllm and ftcore.serve.process)."""
    from ftcore.errors import ConfigError

    if name == "auto":
        name = "transformers"
    if name not in BACKENDS:
        known = ", ".join([*BACKENDS, *OUT_OF_PROCESS])
        raise ConfigError(f"serve.backend: '{name}' is not an in-process backend; backends: {known}")
    return BACKENDS[name]
