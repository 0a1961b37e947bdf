"""Reading a settings file (TOML or YAML) for :func:`study.config.load_config_file`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from study._validation import fail
from study.errors import ConfigError
from study.redact import one_line

__all__ = ["read_settings_file"]


def read_settings_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file of flat settings.

    Raises:
        ConfigError: The file is missing, unparsable, not a mapping, or of another type.
    """
    path = Path(path)
    if not path.is_file():
        fail("config", str(path), "an existing TOML or YAML file")
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        # Checked before the try: a ConfigError is a ValueError and would read as a parse error.
        fail("config", str(path), "a file ending in .toml, .yaml or .yml")
    try:
        if suffix == ".toml":
            import tomllib

            with path.open("rb") as fh:
                data = tomllib.load(fh)
        else:
            import yaml

            data = yaml.safe_load(path.read_text()) or {}
    except (ValueError, OSError) as exc:  # tomllib and yaml errors derive from ValueError
        raise ConfigError(f"`config` could not be parsed: {path}: {one_line(exc)}") from None
    except Exception as exc:  # yaml.YAMLError is not a ValueError
        raise ConfigError(f"`config` could not be parsed: {path}: {one_line(exc)}") from None
    if not isinstance(data, dict):
        fail("config", str(path), "a mapping of settings at the top level")
    if "study" in data and isinstance(data["study"], dict) and len(data) == 1:
        data = data["study"]  # allow one [study] table
    return data
