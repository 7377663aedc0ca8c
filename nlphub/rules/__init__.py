"""ContextualParser rules (Spark NLP for Healthcare): validation, dictionary CSVs, import/export.

Pure domain code (stdlib + pydantic): no database, no tasks. See `nlphub.rules.model` for the rule
shape and its limits, `nlphub.rules.io` for JSON/ZIP import and ZIP export.
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
