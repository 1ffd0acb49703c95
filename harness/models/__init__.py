"""Models by logical name: loading per profile, anatomy of each architecture, activation capture."""

from harness.models.anatomy import Anatomy, architecture_facts, find_anatomy
from harness.models.capture import ActivationCapture, NonFiniteActivationError, check_finite
from harness.models.gguf_wheel import ModelFetchError
from harness.models.loading import DeviceUnavailable, LoadedModel, ModelProvider, load_model, resolve_device

__all__ = [
    "ActivationCapture", "Anatomy", "DeviceUnavailable", "LoadedModel", "ModelFetchError", "ModelProvider",
    "NonFiniteActivationError", "architecture_facts", "check_finite", "find_anatomy", "load_model",
    "resolve_device",
]
