"""A URLconf for the column-batcher test: ``POST /translate/`` over a column batch function grouped by language.

The batch function records each batch; while ``TRANSLATOR.release`` is clear, its first batch waits.
"""

from __future__ import annotations

import json
import operator

from django.http import HttpRequest, JsonResponse
from django.urls import path

from microbatch import ColumnBatcher
from tests._support import Translator

TRANSLATOR = Translator()


def translate_texts(texts: list[str], languages: list[str]) -> list[str]:
    return TRANSLATOR(texts, languages)


translate: ColumnBatcher[str, str, str] = ColumnBatcher(
    translate_texts, max_batch_size=8, max_wait_ms=0, group_by=operator.itemgetter("languages"),
    max_batch_tokens=64, size_of=lambda call: len(call["texts"]),
)


def view(request: HttpRequest) -> JsonResponse:
    body = json.loads(request.body)
    return JsonResponse({"text": translate(texts=body["text"], languages=body["language"])})


urlpatterns = [path("translate/", view)]
