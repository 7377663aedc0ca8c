"""Uploaded and downloaded resources: archive safety and Spark NLP resource validation.

`nlphub.uploads.archive` inspects and unpacks zips and uploaded folders safely;
`nlphub.uploads.sparknlp` checks that an unpacked folder is a Spark NLP model, embeddings or
pipeline and that it fits the installed versions. Both are pure (no database, broker or
network; `lint-imports` checks it) and are what this package exports. `nlphub.uploads.service`
accepts an upload into the database and installs it (`nlphub.install`).
"""

from nlphub.uploads.archive import (
    DEFAULT_LIMITS,
    ArchiveLimits,
    ArchiveProblem,
    ProblemError,
    ZipEntryInfo,
    check_tree,
    check_zip,
    resource_root,
    safe_extract,
)
from nlphub.uploads.sparknlp import (
    Kind,
    Library,
    ResourceInfo,
    ResourceProblem,
    check_compatibility,
    validate_resource,
)

__all__ = [
    "DEFAULT_LIMITS",
    "ArchiveLimits",
    "ArchiveProblem",
    "Kind",
    "Library",
    "ProblemError",
    "ResourceInfo",
    "ResourceProblem",
    "ZipEntryInfo",
    "check_compatibility",
    "check_tree",
    "check_zip",
    "resource_root",
    "safe_extract",
    "validate_resource",
]
