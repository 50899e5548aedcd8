"""``GET /v1/models`` and ``GET /v1/models/{id}``: the one model this server serves, in OpenAI's list shape."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from realtime.errors import quote
from realtime.http.errors import HTTPError, error_response

OWNER = "stepfun-ai"
Handler = Callable[[Request], Awaitable[Response]]


def model_routes(model: str, created: int) -> tuple[Handler, Handler]:
    """The list handler and the retrieve handler for ``model`` (``created``: Unix seconds of server start)."""
    card: dict[str, Any] = {"id": model, "object": "model", "created": created, "owned_by": OWNER}

    async def list_models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [card]})

    async def retrieve_model(request: Request) -> Response:
        try:
            if request.path_params["model"] != model:
                raise HTTPError(
                    404,
                    "model_not_found",
                    f"The model '{quote(request.path_params['model'])}' does not exist.",
                    "model",
                )
        except HTTPError as exc:
            return error_response(exc)
        return JSONResponse(card)

    return list_models, retrieve_model
