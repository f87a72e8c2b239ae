"""Where a project's journeys, templates and catalog live. Shell: looks at the file system.

A project is a folder holding ``journeys/`` (one YAML file per journey), ``templates/`` and
``catalog.yaml``. Commands find it by walking up from the current directory, or take
``--project DIR``; ``JOURNEY_PROJECT`` in the environment does the same.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, did_you_mean


@dataclass(frozen=True)
class Project:
    root: Path

    @property
    def journeys_dir(self) -> Path:
        return self.root / "journeys"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.yaml"

    @classmethod
    def find(cls, start: str | Path | None = None) -> "Project":
        if start is None and os.environ.get("JOURNEY_PROJECT"):
            start = os.environ["JOURNEY_PROJECT"]
            return cls(Path(start).resolve())
        here = Path(start or Path.cwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / "journeys").is_dir():
                return cls(candidate)
        return cls(here)

    def journey_files(self) -> list[Path]:
        if not self.journeys_dir.is_dir():
            return []
        return sorted(
            p for p in self.journeys_dir.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()
        )

    def journey_names(self) -> list[str]:
        return [p.stem for p in self.journey_files()]

    def journey_path(self, name_or_path: str) -> Path:
        """A journey by name (``cart_abandonment``) or by path to its YAML file."""
        as_path = Path(name_or_path)
        if as_path.suffix in (".yaml", ".yml"):
            if as_path.is_file():
                return as_path
            raise InputError(f"{name_or_path}: file not found")
        for suffix in (".yaml", ".yml"):
            candidate = self.journeys_dir / f"{name_or_path}{suffix}"
            if candidate.is_file():
                return candidate
        names = self.journey_names()
        hint = did_you_mean(name_or_path, names)
        known = f" Known journeys: {', '.join(names)}." if names else ""
        raise InputError(
            f"no journey named '{name_or_path}' in {self.journeys_dir}{hint}{known}"
        )
