"""The ``openai`` and ``azure`` (Azure OpenAI) platforms: one wire format, two ways to address
it and to send the key."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from nlphub.embeddings.platforms.base import EmbeddingError
from nlphub.embeddings.platforms.http import HttpEncoder


class OpenAIEncoder(HttpEncoder):
    """``POST {base_url}/embeddings`` with ``Authorization: Bearer``; ≤ 2048 inputs a request."""

    platform = "openai"
    max_batch = 2048
    default_base_url: ClassVar[str | None] = "https://api.openai.com/v1"
    OPTIONS = HttpEncoder.OPTIONS | {"dimensions"}

    def __init__(self, model: str, *, dimensions: int | None = None, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.dimensions = dimensions

    def _body(self, texts: list[str]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": texts}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        return body

    def _request(self, texts: list[str]) -> tuple[str, dict[str, str], Any, dict[str, str]]:
        headers = {"Authorization": f"Bearer {self._key.reveal()}"}
        return f"{self.base_url}/embeddings", {}, self._body(texts), headers

    def _parse(self, body: Any, count: int) -> list[Any]:
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != count:
            raise EmbeddingError(f"{self.platform} answered without {count} embeddings")
        rows: list[Any] = [None] * count
        for position, item in enumerate(data):
            if not isinstance(item, dict) or "embedding" not in item:
                raise EmbeddingError(f"{self.platform} answered with a malformed data item")
            index = item.get("index", position)
            if not isinstance(index, int) or not 0 <= index < count or rows[index] is not None:
                raise EmbeddingError(f"{self.platform} answered with a bad index {index!r}")
            rows[index] = item["embedding"]
        return rows


class AzureOpenAIEncoder(OpenAIEncoder):
    """``POST {endpoint}/openai/deployments/{deployment}/embeddings?api-version=...`` with
    ``api-key``; `model` is the deployment name, `base_url` the resource endpoint."""

    platform = "azure"
    default_base_url = None
    OPTIONS = OpenAIEncoder.OPTIONS | {"api_version"}

    def __init__(self, model: str, *, api_version: str = "2024-02-01", **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.api_version = api_version

    def _request(self, texts: list[str]) -> tuple[str, dict[str, str], Any, dict[str, str]]:
        url = f"{self.base_url}/openai/deployments/{quote(self.model, safe='')}/embeddings"
        body = self._body(texts)
        body.pop("model")
        return url, {"api-version": self.api_version}, body, {"api-key": self._key.reveal()}
