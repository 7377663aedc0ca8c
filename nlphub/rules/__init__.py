"""ContextualParser rules (Spark NLP for Healthcare): validation, dictionary CSVs, import/export.

`nlphub.rules.model` (the rule shape and its limits) and `nlphub.rules.io` (JSON/ZIP import and
ZIP export) are pure (no database or broker; `lint-imports` checks it) and are what this package
exports; `nlphub.rules.service` keeps rules in the database.
"""

from nlphub.rules.io import DEFAULT_LIMITS, ImportLimits, export_rules, load_rules
from nlphub.rules.model import (
    RuleError,
    RuleSpec,
    RuleType,
    parse_dictionary_csv,
    rule_file_name,
    rule_key,
    validate_rule,
)

__all__ = [
    "DEFAULT_LIMITS",
    "ImportLimits",
    "RuleError",
    "RuleSpec",
    "RuleType",
    "export_rules",
    "load_rules",
    "parse_dictionary_csv",
    "rule_file_name",
    "rule_key",
    "validate_rule",
]
