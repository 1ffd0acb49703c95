"""The spec fields that document an experiment and never change what a run computes.

Editing them reruns the spec's analysis and the report but no model: dvc.yaml lists them as params of the
analysis stage only, and a saved run whose spec differs from the file only in them is still the file's run. (Kept out of
registry/common.py on purpose: every run stage depends on that file.)
"""

from __future__ import annotations

DOCUMENTATION_FIELDS: tuple[str, ...] = ("description", "source", "tags", "expected", "claims")


def without_documentation(spec_fields: dict) -> dict:
    """A spec's fields (a dumped spec or a YAML file's top level) less the documentation fields."""
    return {key: value for key, value in spec_fields.items() if key not in DOCUMENTATION_FIELDS}
