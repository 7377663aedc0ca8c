"""The ``cohere`` platform: Cohere's embed API."""

from __future__ import annotations

from typing import Any

from nlphub.embeddings.platforms.base import EmbeddingError
from nlphub.embeddings.platforms.http import HttpEncoder


class CohereEncoder(HttpEncoder):
    """``POST {base_url}/embed`` with ``Authorization: Bearer``; ≤ 96 texts a request."""

    platform = "cohere"
    max_batch = 96
    default_base_url = "https://api.cohere.com/v1"
    OPTIONS = HttpEncoder.OPTIONS | {"input_type"}

    def __init__(self, model: str, *, input_type: str = "search_document", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.input_type = input_type

    def _request(self, texts: list[str]) -> tuple[str, dict[str, str], Any, dict[str, str]]:
        body = {"texts": texts, "model": self.model, "input_type": self.input_type}
        headers = {"Authorization": f"Bearer {self._key.reveal()}"}
        return f"{self.base_url}/embed", {}, body, headers

    def _parse(self, body: Any, count: int) -> list[Any]:
        embeddings = body.get("embeddings") if isinstance(body, dict) else None
        if isinstance(embeddings, dict):  # v2 / embedding_types answers: {"float": [...]}
            embeddings = embeddings.get("float")
        if not isinstance(embeddings, list) or len(embeddings) != count:
            raise EmbeddingError(f"{self.platform} answered without {count} embeddings")
        return embeddings
