"""What to run: validated experiment specs and the model/dataset catalog. Never imports torch."""

from registry.errors import SpecError
from registry.loader import load_spec, load_spec_all_profiles

__all__ = ["SpecError", "load_spec", "load_spec_all_profiles"]
