"""The model server's app: MLflow's own scoring app (`mlflow.pyfunc.scoring_server`) behind a
thin ASGI layer that answers a client's mistake with a clear 4xx and a JSON message before
MLflow sees it (MLflow answers 500 to a POST without a Content-Type, or to JSON nested
thousands of levels deep). Run by uvicorn, the server program of `mlflow models serve`:

    uvicorn --factory serving.hardened:create_app --workers N

A POST to /invocations is checked here (Content-Type, body size, nesting depth, JSON, a JSON
object), its JSON parsed once and handed to MLflow's `invocations`, the function MLflow's own
route calls (which would parse the body twice more); every other request goes to MLflow's app.
"""

from __future__ import annotations

import asyncio
import json
import os

import numpy as np
from mlflow.environment_variables import MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PyFuncModel, scoring_server
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

MODEL_URI = "LLMSEQREC_MODEL_URI"  # what `create_app` serves, e.g. models:/llmseqrec@champion
MAX_BODY_BYTES = 2**20  # nginx's default; a query of 10,000 int64 ids is about 220 KB
MAX_DEPTH = 32  # a query nests 3 deep: {"inputs": [{"history": [...]}]}
# a bracket as a signed byte: +1 opens, -1 (0xff) closes; any other byte is deleted
STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
NOT_BRACKETS = bytes(set(range(256)) - set(b"[]{}"))


class Refused(Exception):
    """A request this layer answers itself with `status` and a JSON message."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message

    def response(self) -> Response:
        return Response(json.dumps({"error_code": self.error_code, "message": self.message}),
                        self.status, media_type="application/json")


def nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether arrays and objects nest more than `limit` deep in the JSON `body`, brackets in
    strings left out: exact for valid JSON, and linear in time for any bytes."""
    if body.count(b"[") + body.count(b"{") <= limit:  # the usual query: no need to look closer
        return False
    unescaped = body.replace(b"\\\\", b"").replace(b'\\"', b"")  # escapes are only in strings
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    steps = np.frombuffer(outside_strings.translate(STEPS, NOT_BRACKETS), np.int8)
    return int(np.cumsum(steps, dtype=np.int64).max(initial=0)) > limit


def check_content_type(content_type: str | None) -> None:
    """JSON in UTF-8, the one type the served model takes: 'application/json', with at most a
    charset parameter of utf-8."""
    if content_type is None:
        raise Refused(415, "UNSUPPORTED_MEDIA_TYPE",
                      "Content-Type is missing: send the query as application/json")
    mime, *parameters = (part.strip().lower() for part in content_type.split(";"))
    if mime != "application/json" or any(p.replace('"', "") != "charset=utf-8"
                                         for p in parameters):
        raise Refused(415, "UNSUPPORTED_MEDIA_TYPE",
                      f"Content-Type {content_type!r} is not supported: send the query as "
                      "application/json (UTF-8)")


async def read_body(request: Request) -> bytes:
    """The body, refused once it is over MAX_BODY_BYTES (by its Content-Length, or as it
    streams in)."""
    too_large = Refused(413, "REQUEST_TOO_LARGE",
                        f"The body is over {MAX_BODY_BYTES} bytes: send fewer queries at once")
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def parse(body: bytes) -> dict:
    """The body as a JSON object, parsed once, after its nesting depth is checked."""
    if nests_deeper_than(body, MAX_DEPTH):
        raise Refused(400, "BAD_REQUEST", f"The JSON nests more than {MAX_DEPTH} levels deep")
    try:
        parsed = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise Refused(400, "BAD_REQUEST", f"The body is not valid JSON in UTF-8: {e}") from None
    if not isinstance(parsed, dict):
        raise Refused(400, "BAD_REQUEST", f"{scoring_server.REQUIRED_INPUT_FORMAT}. "
                                          f"Received {type(parsed).__name__}.")
    return parsed


class Hardened:
    """ASGI layer in front of MLflow's scoring app `app` of `model`: a POST to /invocations is
    checked and answered through MLflow's `invocations`, within MLflow's request timeout;
    anything else is MLflow's app's to answer."""

    def __init__(self, app: ASGIApp, model: PyFuncModel) -> None:
        self.app, self.model = app, model
        self.input_schema = model.metadata.get_input_schema()
        self.timeout_s = MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT.get()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"], scope.get("path"), scope.get("method")) != (
                "http", "/invocations", "POST"):
            return await self.app(scope, receive, send)
        try:
            response = await self.invocations(Request(scope, receive))
        except ClientDisconnect:
            return
        await response(scope, receive, send)

    async def invocations(self, request: Request) -> Response:
        try:
            check_content_type(request.headers.get("content-type"))
            body = await read_body(request)
        except Refused as e:
            return e.response()
        try:  # parsed and scored in a thread, as MLflow's route does: the event loop stays free
            return await asyncio.wait_for(asyncio.to_thread(self.score, body), self.timeout_s)
        except TimeoutError:
            return Response("Request processing time exceeded limit", 504,
                            media_type="application/json")

    def score(self, body: bytes) -> Response:
        """The answer to `body`: the model's predictions, or why the query is refused."""
        try:
            result = scoring_server.invocations(parse(body), "application/json", self.model,
                                                self.input_schema)
        except Refused as e:
            return e.response()
        except MlflowException as e:
            return Response(e.serialize_as_json(), e.get_http_status_code(),
                            media_type="application/json")
        return Response(result.response, result.status, media_type=result.mimetype)


def create_app() -> Hardened:
    """MLflow's scoring app of the model at $LLMSEQREC_MODEL_URI (loaded as MLflow's own app
    module loads it), behind the hardening layer: uvicorn's app factory."""
    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_URI])
    return Hardened(scoring_server.init(model), model)
