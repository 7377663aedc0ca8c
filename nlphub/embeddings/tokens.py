"""Token-level embeddings: one vector per word or punctuation mark, with character offsets.

Tokens are ``\\w+`` runs and single non-space, non-word characters (`tokenize_with_offsets`).
For a Hugging Face model each token's vector is the mean of the model's contextual sub-word
vectors (``output_value="token_embeddings"``) that overlap it, matched through the fast
tokenizer's offset mapping; texts longer than the model's window are cut at token starts into
windows that each fit, so every token gets a vector. Other platforms have no token vectors: each
distinct token text is embedded on its own (the same vector wherever the token occurs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from nlphub.embeddings.platforms import EmbeddingError, Encoder, HuggingFaceEncoder, Vectors

_TOKEN = re.compile(r"\w+|[^\w\s]")


class TokenVector(NamedTuple):
    start: int
    end: int
    #: 1-D float32
    vector: Vectors


def tokenize_with_offsets(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) for each ``\\w+`` run or other non-space character, in order;
    ``text[start:end] == token``."""
    return [(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


def token_vectors(
    encoder: Encoder, texts: Sequence[str], *, batch_size: int = 32
) -> list[list[TokenVector]]:
    """Per text, (start, end, vector) for each token of `tokenize_with_offsets`, in order.

    A token the model's tokenizer drops entirely (control characters, for instance) has no
    vector and is left out. `batch_size` is the model batch for Hugging Face encoders.
    """
    if isinstance(texts, str):
        raise EmbeddingError("token_vectors() takes a list of texts, not a single string")
    items = list(texts)
    if isinstance(encoder, HuggingFaceEncoder):
        own = getattr(encoder, "token_embeddings", None)  # the ONNX backend runs them itself
        return _contextual(encoder.st, items, batch_size, own)
    return _static(encoder, items)


def _static(encoder: Encoder, texts: list[str]) -> list[list[TokenVector]]:
    tokenized = [tokenize_with_offsets(text) for text in texts]
    vocabulary = sorted({token for tokens in tokenized for token, _, _ in tokens})
    if not vocabulary:
        return [[] for _ in texts]
    matrix = encoder.encode(vocabulary)
    row = {token: i for i, token in enumerate(vocabulary)}
    return [
        [TokenVector(start, end, matrix[row[token]]) for token, start, end in tokens]
        for tokens in tokenized
    ]


def _to_numpy(x: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def _windows(tokenizer: Any, text: str, limit: int) -> list[tuple[int, int]]:
    """Character ranges of `text`, each at most `limit` sub-words, cut at token starts."""
    encoded = tokenizer(
        text,
        add_special_tokens=False,
        return_offsets_mapping=True,
        truncation=False,
        verbose=False,
    )
    offsets = [(int(s), int(e)) for s, e in encoded["offset_mapping"]]
    if not offsets:
        return []
    if len(offsets) <= limit:
        return [(0, len(text))]
    starts = {start for _, start, _ in tokenize_with_offsets(text)}
    cuts = [0]
    i = 0
    while len(offsets) - i > limit:
        j = i + limit  # the first sub-word of the next window
        k = j
        while k > i + 1 and offsets[k][0] not in starts:
            k -= 1
        if k > i + 1:
            j = k
        cuts.append(j)
        i = j
    bounds = [offsets[c][0] for c in cuts] + [len(text)]
    return [(0 if n == 0 else bounds[n], bounds[n + 1]) for n in range(len(cuts))]


def _contextual(
    model: Any,
    texts: list[str],
    batch_size: int,
    token_embeddings: Callable[[list[str]], Sequence[Any]] | None = None,
) -> list[list[TokenVector]]:
    """`token_embeddings` (default: the sentence-transformers model's) gives each chunk's
    sub-word vectors, aligned with its fast tokenizer's offsets."""
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise EmbeddingError("token-level embeddings need a model with a fast tokenizer")
    max_length = int(model.max_seq_length)
    limit = max(1, max_length - int(tokenizer.num_special_tokens_to_add(pair=False)))
    windows: list[tuple[int, int, int]] = []  # (text index, char start, char end)
    for index, text in enumerate(texts):
        windows.extend((index, a, b) for a, b in _windows(tokenizer, text, limit))
    pieces: list[list[tuple[int, int, Vectors]]] = [[] for _ in texts]
    if windows:
        chunks = [texts[i][a:b] for i, a, b in windows]
        if token_embeddings is not None:
            outputs = token_embeddings(chunks)
        else:
            outputs = model.encode(
                chunks,
                output_value="token_embeddings",
                batch_size=batch_size,
                show_progress_bar=False,
            )
        for (index, a, _), chunk, output in zip(windows, chunks, outputs, strict=True):
            vectors = _to_numpy(output)
            encoded = tokenizer(
                chunk,
                return_offsets_mapping=True,
                return_special_tokens_mask=True,
                truncation=True,
                max_length=max_length,
            )
            if len(encoded["input_ids"]) != vectors.shape[0]:
                raise EmbeddingError(
                    f"token alignment failed: {vectors.shape[0]} vectors for "
                    f"{len(encoded['input_ids'])} tokens"
                )
            for (s, e), special, vector in zip(
                encoded["offset_mapping"], encoded["special_tokens_mask"], vectors, strict=True
            ):
                if not special and e > s:
                    pieces[index].append((a + int(s), a + int(e), vector))
    return [
        _align(text, sorted(p, key=lambda t: t[0])) for text, p in zip(texts, pieces, strict=True)
    ]


def _align(text: str, pieces: list[tuple[int, int, Vectors]]) -> list[TokenVector]:
    """Mean of the sub-word vectors overlapping each token (pieces sorted by start)."""
    out: list[TokenVector] = []
    first = 0
    for _, start, end in tokenize_with_offsets(text):
        while first < len(pieces) and pieces[first][1] <= start:
            first += 1
        hits = []
        k = first
        while k < len(pieces) and pieces[k][0] < end:
            if pieces[k][1] > start:
                hits.append(pieces[k][2])
            k += 1
        if hits:
            mean = np.mean(np.stack(hits), axis=0, dtype=np.float64)
            out.append(TokenVector(start, end, np.asarray(mean, dtype=np.float32)))
    return out
