"""The editions of Spark NLP resources and the library each needs: one table for all.

An edition (as the hub and licences spell it) names the library whose installed version its
resources are checked against (a `schemas.settings.LIBRARY_DISTRIBUTIONS` key). Every edition
but Open Source needs a licence. Plain data: no imports from the project.
"""

from __future__ import annotations

OPEN_SOURCE = "Open Source"
HEALTHCARE = "Healthcare NLP"

#: Edition → the library its resources need, in the order editions are listed to users.
EDITION_LIBRARY: dict[str, str] = {
    OPEN_SOURCE: "spark-nlp",
    HEALTHCARE: "healthcare-nlp",
    "Finance NLP": "finance-nlp",
    "Legal NLP": "legal-nlp",
    "Visual NLP": "visual-nlp",
}
EDITIONS: tuple[str, ...] = tuple(EDITION_LIBRARY)
LICENSED_EDITIONS: tuple[str, ...] = tuple(e for e in EDITIONS if e != OPEN_SOURCE)

#: Library → the edition of the resources built with it (an upload's edition from its classes).
EDITION_OF_LIBRARY: dict[str, str] = {lib: edition for edition, lib in EDITION_LIBRARY.items()}

#: Library → its name in messages ("needs Healthcare NLP 5.1 or newer").
LIBRARY_LABEL: dict[str, str] = {
    **{lib: edition for edition, lib in EDITION_LIBRARY.items()},
    "spark-nlp": "Spark NLP",
    "spark": "Spark",
}
