"""Locust users for ``load/overload.py``: the locustfile's checked single-text user, and one that
honours ``Retry-After`` as a well-behaved client (or a retrying proxy) does.

    locust -f load/locust_overload.py --host http://127.0.0.1:8000 --headless -u 300 -r 300 -t 30s PoliteUser

Importing ``locustfile`` brings its response checks and its measurement-window records (the
``--results-file`` JSON) along.
"""

from __future__ import annotations

from locustfile import InteractiveUser, check


class PoliteUser(InteractiveUser):
    """One text per request, back to back; after a 503 it waits the response's Retry-After seconds."""

    weight = 1
    request_name = "/embed text (polite)"

    def on_start(self) -> None:
        super().on_start()
        self.pause = 0.0

    def post(self, texts: list[str], single: bool) -> None:
        # The locustfile's post, plus noting Retry-After on a 503.
        body = {"text": texts[0]} if single else {"texts": texts}
        with self.client.post(
            "/embed", json=body, name=self.request_name, catch_response=True, context={"texts": len(texts)}
        ) as response:
            if response.status_code == 503:
                self.pause = float(response.headers.get("Retry-After") or 1)
            problem = check(response, texts, single)
            if problem is None:
                response.success()
            else:
                response.failure(problem)

    def wait_time(self) -> float:
        pause, self.pause = self.pause, 0.0
        return pause
