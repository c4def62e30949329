"""`medsft serve`: an OpenAI-compatible chat API (FastAPI + uvicorn, the `serve` extra).

`/v1/chat/completions` (plain and streamed), `/v1/models`, `/health`, and with --ui a page at `/`.
One model in memory answers one request at a time; others wait their turn, up to a bound past
which the server says 429 at once. Every refusal is a 4xx with OpenAI's error body, never a crash:
wrong key (401), unknown model (404), body too large (413), malformed JSON or fields (400), a
prompt longer than the limit (400, context_length_exceeded).

With an adapter, the base model is served too, as `NAME-base` (the adapter switched off for that
request: no second copy), so a client or the page can compare the two."""


import asyncio  # (no `from __future__ import annotations`: FastAPI reads the handlers' annotations)
import json
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

from medsft.data.records import Message
from medsft.errors import UserError
from medsft.eval.generate import Sampling, prompt_for
from medsft.serve.loading import Loaded
from medsft.serve.stream import AnswerStream

SERVE_EXTRA = "pip install 'medsft[serve]'"


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 1_000_000
    max_prompt_tokens: int = 4096
    max_tokens: int = 2048  # the most a request may ask to generate
    max_waiting: int = 64  # requests admitted (generating or queued); past it: 429


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code, self.param = status, message, kind, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ChatRequest:
    model: str
    system: str | None
    history: list[Message]
    question: str
    sampling: Sampling
    stop: tuple[str, ...]
    stream: bool
    include_usage: bool


def parse_request(body: bytes, names: list[str], limits: Limits) -> ChatRequest:
    """A chat completion request, checked field by field (ApiError naming the field otherwise)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, f"the body is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    model = data.get("model")
    if not isinstance(model, str):
        raise ApiError(400, "'model' is required (a string)", param="model")
    if model not in names:
        raise ApiError(404, f"the model {model!r} does not exist; this server has {', '.join(names)}",
                       code="model_not_found", param="model")
    system, history, question = _messages(data.get("messages"))
    max_tokens = data.get("max_completion_tokens", data.get("max_tokens"))
    max_tokens = min(256, limits.max_tokens) if max_tokens is None else max_tokens
    temperature = data.get("temperature", 1.0)
    top_p = data.get("top_p", 1.0)
    seed = data.get("seed")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= limits.max_tokens:
        raise ApiError(400, f"'max_tokens' must be an integer from 1 to {limits.max_tokens}", param="max_tokens")
    if not _number(temperature) or not 0 <= temperature <= 2:
        raise ApiError(400, "'temperature' must be a number from 0 to 2", param="temperature")
    if not _number(top_p) or not 0 < top_p <= 1:
        raise ApiError(400, "'top_p' must be a number in (0, 1]", param="top_p")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ApiError(400, "'seed' must be an integer", param="seed")
    if data.get("n", 1) != 1:
        raise ApiError(400, "'n' must be 1 (one answer per request)", param="n")
    stop = data.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or len(stop) > 4 or not all(isinstance(s, str) for s in stop):
        raise ApiError(400, "'stop' must be a string or a list of at most 4 strings", param="stop")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    options = data.get("stream_options") or {}
    sampling = Sampling(max_tokens, float(temperature), float(top_p),
                        seed if seed is not None else secrets.randbelow(2**31))
    return ChatRequest(model, system, history, question, sampling, tuple(stop), stream,
                       bool(isinstance(options, dict) and options.get("include_usage")))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _messages(messages) -> tuple[str | None, list[Message], str]:
    """(system, earlier turns, the last user message) from OpenAI messages."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    system, turns = None, []
    for number, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"messages[{number}] must be an object with a 'role'", param="messages")
        role, content = message["role"], message.get("content")
        if isinstance(content, list):  # text parts
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ApiError(400, f"messages[{number}]: only text content is supported", param="messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(400, f"messages[{number}]: 'content' must be a string", param="messages")
        if role in ("system", "developer"):
            if turns:
                raise ApiError(400, f"messages[{number}]: a system message must come first", param="messages")
            system = content if system is None else system + "\n" + content
        elif role in ("user", "assistant", "tool"):
            turns.append(Message({"tool": "observation"}.get(role, role), content))
        else:
            raise ApiError(400, f"messages[{number}]: unknown role {role!r}", param="messages")
    if not turns or turns[-1].role not in ("user", "observation"):
        raise ApiError(400, "the last message must be from the user (or a tool result)", param="messages")
    return system, turns[:-1], turns[-1].content


def require_serve_stack() -> None:
    """FastAPI and uvicorn are the `serve` extra: say so before any model loads."""
    import importlib.util

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise UserError(f"medsft serve needs FastAPI and uvicorn: {SERVE_EXTRA}")


def build_app(loaded: Loaded, name: str, api_key: str | None = None, limits: Limits = Limits(), ui: bool = False):
    require_serve_stack()
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    names = [name] + ([f"{name}-base"] if loaded.has_adapter else [])
    app = FastAPI(title="medsft", docs_url=None, redoc_url=None, openapi_url=None)
    # Everything that touches the model runs on one worker thread, in order: a request whose client
    # went away cannot overlap the next one (its last step finishes first), and switching the adapter
    # off for a `-base` request never races another request's generation. The lock keeps each
    # request's steps together.
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medsft-model")
    model_lock = asyncio.Lock()
    admitted = 0

    async def on_worker(function, *args):
        return await asyncio.get_running_loop().run_in_executor(worker, function, *args)
    created = int(time.time())

    def error(problem: ApiError):
        return JSONResponse(problem.body(), status_code=problem.status)

    def check_key(request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            raise ApiError(401, "invalid API key (send Authorization: Bearer KEY)", "authentication_error",
                           "invalid_api_key")

    @app.exception_handler(ApiError)
    async def api_error(_request, problem: ApiError):
        return error(problem)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, problem: StarletteHTTPException):  # unknown paths and methods, OpenAI's way
        message = (f"no route {request.method} {request.url.path}" if problem.status_code in (404, 405)
                   else str(problem.detail))
        code = {404: "not_found", 405: "method_not_allowed"}.get(problem.status_code)
        return error(ApiError(problem.status_code, message, code=code))

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": names, "waiting": admitted}

    @app.get("/v1/models")
    async def models(request: Request):
        check_key(request)
        return {"object": "list", "data": [{"id": n, "object": "model", "created": created, "owned_by": "medsft"}
                                           for n in names]}

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        nonlocal admitted
        check_key(request)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limits.max_request_bytes:
            raise ApiError(413, f"the body is larger than {limits.max_request_bytes} bytes", code="request_too_large")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > limits.max_request_bytes:
                raise ApiError(413, f"the body is larger than {limits.max_request_bytes} bytes",
                               code="request_too_large")
        asked = parse_request(body, names, limits)
        chat = loaded.chat
        system = asked.system if asked.system is not None else chat.system_prompt
        prompt = prompt_for(chat.template, asked.question, system, asked.history)
        prompt_ids = chat.tokenize([prompt])[0]
        if len(prompt_ids) > limits.max_prompt_tokens:
            raise ApiError(400, f"the prompt is {len(prompt_ids)} tokens; this server takes at most "
                                f"{limits.max_prompt_tokens}", code="context_length_exceeded", param="messages")
        if admitted >= limits.max_waiting:
            raise ApiError(429, f"busy: {admitted} requests in flight (limit {limits.max_waiting}); retry later",
                           "rate_limit_error", "too_many_requests")
        base_only = asked.model.endswith("-base") and asked.model != name
        stream = AnswerStream(loaded.model, chat, prompt, asked.sampling, asked.stop, prompt_ids)
        identity = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": asked.model}

        def run_all() -> str:
            with loaded.model.disable_adapter() if base_only else nullcontext():
                return "".join(stream)

        def usage() -> dict:
            return {"prompt_tokens": stream.prompt_tokens, "completion_tokens": stream.tokens,
                    "total_tokens": stream.prompt_tokens + stream.tokens}

        if not asked.stream:
            admitted += 1
            try:
                async with model_lock:
                    text = await on_worker(run_all)
            finally:
                admitted -= 1
            return {**identity, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": stream.finish_reason}], "usage": usage()}

        def chunk(delta: dict, finish: str | None) -> str:
            payload = {**identity, "object": "chat.completion.chunk",
                       "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

        async def events():
            nonlocal admitted
            admitted += 1  # counted here: a response never started (client gone) never decrements
            try:
                async with model_lock:
                    yield chunk({"role": "assistant", "content": ""}, None)
                    pieces = iter(stream)
                    context = loaded.model.disable_adapter() if base_only else nullcontext()
                    await on_worker(context.__enter__)
                    try:
                        while (piece := await on_worker(next, pieces, None)) is not None:
                            yield chunk({"content": piece}, None)
                    finally:
                        worker.submit(context.__exit__, None, None, None)  # queued before any later request
                    yield chunk({}, stream.finish_reason)
                    if asked.include_usage:
                        yield f"data: {json.dumps({**identity, 'object': 'chat.completion.chunk', 'choices': [], 'usage': usage()})}\n\n"
                    yield "data: [DONE]\n\n"
            finally:
                admitted -= 1

        return StreamingResponse(events(), media_type="text/event-stream")

    if ui:
        from medsft.serve.page import page

        @app.get("/", response_class=HTMLResponse)
        async def index():
            return page(names, api_key is not None)

    return app


def check_listen(host: str, port: int) -> None:
    """That `host:port` can be listened on now (a port out of range, taken, or an address this machine
    does not have is one line, before the model loads)."""
    import socket

    if not 0 < port < 65536:
        raise UserError(f"--port: {port} is not a port number (1-65535)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise UserError(f"--host: {host}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as error:
            raise UserError(f"--port: cannot listen on {host}:{port} ({error.strerror})") from None


def serve(loaded: Loaded, name: str, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          limits: Limits = Limits(), ui: bool = False, log=print) -> None:
    app = build_app(loaded, name, api_key, limits, ui)
    import uvicorn

    models = name + (f" and {name}-base" if loaded.has_adapter else "")
    log(f"serving {models} on http://{host}:{port}/v1" + (f" (page: http://{host}:{port}/)" if ui else "")
        + ("" if api_key else "; no API key set (--api-key or MEDSFT_API_KEY)"))
    uvicorn.run(app, host=host, port=port, log_level="warning")
