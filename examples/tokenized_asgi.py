"""Per-request tokenization, batched forward pass: an ASGI endpoint over microbatch.tensors.PadCollate.

    uvicorn examples.tokenized_asgi:app
    curl -s localhost:8000/embed -H 'content-type: application/json' -d '{"text": "hello world"}'

Each request tokenizes its own text (on the event loop: a fast tokenizer takes microseconds) and
submits the features, a dict of token lists, to a batcher. The batcher pads the features of
concurrent requests into one batch (at most ``MAX_BATCH_TOKENS`` padded tokens), runs the
transformer once, mean-pools and normalizes each row, and hands each request its own vector: the
embedding sentence-transformers' ``encode`` gives for the text (within 1e-5).

``POST /embed {"text": "..."}`` -> ``{"embedding": [384 floats]}``. A body that is not JSON gets
400, a missing or non-string ``text`` 422, a text over ``MAX_TOKENS`` word pieces 413 (rejected, not
truncated), each with a JSON ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any

import torch
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_microbatch import BatchingMiddleware, get_batcher
from examples._embedder import load_model
from microbatch import Batcher
from microbatch.tensors import PadCollate

_model = load_model()
transformer = _model[0].auto_model.eval()
tokenizer = _model.tokenizer

MAX_TOKENS: int = _model.max_seq_length  # 256: what sentence-transformers reads of a text
MAX_BATCH_TOKENS = 4096  # padded tokens per forward pass: 16 texts of MAX_TOKENS, or many short ones


def forward(features: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean-pooled, unit-length embeddings of a padded batch: one (384,) row per text.

    Pooling uses the attention mask, so the padding PadCollate adds never reaches a text's vector.
    """
    with torch.inference_mode():
        hidden = transformer(**features).last_hidden_state
        mask = features["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def embed(request: Request) -> JSONResponse:
    try:
        body = await request.json()
    except ValueError:
        return error(400, 'the body must be JSON: {"text": "..."}')
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        return error(422, 'expected a JSON object with a string field "text"')
    # Tokenizing one piece past the limit is enough to tell that a text is too long.
    features = tokenizer(text, truncation=True, max_length=MAX_TOKENS + 1)
    if len(features["input_ids"]) > MAX_TOKENS:
        return error(413, f"the text is longer than {MAX_TOKENS} word pieces; split it")
    vector = await get_batcher(request, "embed").acall(dict(features))
    return JSONResponse({"embedding": vector.tolist()})


def create_app() -> Starlette:
    """A new app with a batcher of its own (the middleware starts it at startup and drains it at shutdown)."""
    embedder: Batcher[dict[str, Any], torch.Tensor] = Batcher(
        forward,
        collate=PadCollate(
            {"input_ids": tokenizer.pad_token_id, "attention_mask": 0, "token_type_ids": tokenizer.pad_token_type_id},
            trim=False,  # pooled rows have no token axis
        ),
        max_batch_tokens=MAX_BATCH_TOKENS,
        name="embed",
    )
    return Starlette(
        routes=[Route("/embed", embed, methods=["POST"])],
        middleware=[Middleware(BatchingMiddleware, batchers={"embed": embedder})],
    )


app = create_app()
