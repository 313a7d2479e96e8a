"""The configuration: one YAML file read once at start-up into frozen, validated models.

Modules: models (the pydantic models, pure), loading (reads the file, substitutes secrets, maps
errors to file:line), yaml_reader (YAML nodes to data with line numbers), files (bounded reads,
permission checks). May import crypto.keys (recipient parsing) and the foundation modules only.
"""

from camrec.config.loading import load_config, parse_config, read_recipients_file
from camrec.config.models import CameraConfig, Config, MotionSettings, Polygon, StorageConfig

__all__ = ["CameraConfig", "Config", "MotionSettings", "Polygon", "StorageConfig", "load_config", "parse_config",
           "read_recipients_file"]
