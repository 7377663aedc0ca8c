"""Where Hugging Face models are found: the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

from nlphub.embeddings import bundled_model_path, resolve_model_path


def test_bundled_minilm_is_found() -> None:
    path = bundled_model_path("all-MiniLM-L6-v2")
    assert path is not None and (path / "model.safetensors").is_file()
    assert bundled_model_path("Sentence-Transformers/all-MiniLM-L6-v2") == path
    assert bundled_model_path("bert-base-uncased") is None
    assert resolve_model_path("all-MiniLM-L6-v2") == path
