"""The embedding platforms nlphub offers: the one list that payload validation, the encoder
factory (`nlphub.embeddings.registry`) and the embeddings service derive theirs from.

A `Literal` rather than an enum, so a payload's JSON schema lists the names inline and a
validated payload holds plain strings.
"""

from __future__ import annotations

from typing import Literal, get_args

#: A platform name, as payloads and `make_encoder` take it.
Platform = Literal["bow", "huggingface", "spark", "openai", "azure", "cohere"]

#: The platform names, in the order shown to users.
PLATFORMS: tuple[Platform, ...] = get_args(Platform)
