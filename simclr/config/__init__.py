"""Typed, frozen configuration schemas and the validator shared by configs, policies and specs."""
from simclr.config.schema import ConfigError, build

__all__ = ["ConfigError", "build"]
