"""Shared fixtures: the repository root and throw-away projects to compile journeys in."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from orchestrator.catalog import load_catalog
from orchestrator.compiler import compile_journey, compile_text
from orchestrator.errors import JourneyErrors
from orchestrator.machine import Machine
from orchestrator.project import Project
from orchestrator.render import Renderer

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository root (holds catalog.yaml, journeys/ and templates/)."""
    return ROOT


@dataclass
class TmpProject:
    """A copy of the shipped catalog and templates, with an empty journeys/ folder."""

    root: Path

    @property
    def project(self) -> Project:
        return Project(self.root)

    @property
    def journeys_dir(self) -> Path:
        return self.root / "journeys"

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    def journey_path(self, name: str = "j") -> Path:
        return self.journeys_dir / f"{name}.yaml"

    def write(self, relpath: str, text: str | bytes) -> Path:
        """Write a file under the project root (``templates/sms/x.txt``, ``catalog.yaml``...)."""
        target = self.root / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            target.write_bytes(text)
        else:
            target.write_text(text, encoding="utf-8")
        return target

    def write_journey(self, text: str | bytes, name: str = "j") -> Path:
        return self.write(f"journeys/{name}.yaml", text)

    def write_template(self, relpath: str, text: str) -> Path:
        return self.write(f"templates/{relpath}", text)

    def template_path(self, relpath: str) -> str:
        """How the compiler names a template file in its errors."""
        full = self.templates_dir / relpath
        try:
            return str(full.relative_to(Path.cwd()))
        except ValueError:
            return str(full)

    def compile(self, text: str | None = None, name: str = "j") -> Machine | JourneyErrors:
        """Compile ``text`` (written as journeys/NAME.yaml) or the existing file; returns the
        Machine, or the JourneyErrors raised (never lets any other exception through)."""
        path = self.write_journey(text, name) if text is not None else self.journey_path(name)
        try:
            return compile_journey(path, self.project)
        except JourneyErrors as exc:
            return exc

    def compile_text(self, text: str, name: str = "j") -> Machine:
        """compile_text on this project's catalog and templates; raises JourneyErrors."""
        return compile_text(
            text,
            str(self.journey_path(name)),
            name,
            load_catalog(self.root / "catalog.yaml"),
            Renderer(self.templates_dir),
        )


@pytest.fixture
def make_project(tmp_path: Path) -> Callable[..., TmpProject]:
    """Factory: ``make_project()`` -> a TmpProject with the shipped catalog.yaml and templates/.

    ``make_project(catalog=None)`` leaves the catalog out; ``make_project(catalog="...")``
    writes that text instead; ``journeys=True`` also copies the shipped journeys.
    """
    counter = iter(range(1_000_000))

    def make(*, catalog: str | None | bool = True, journeys: bool = False) -> TmpProject:
        root = tmp_path / f"project{next(counter)}"
        (root / "journeys").mkdir(parents=True)
        shutil.copytree(ROOT / "templates", root / "templates")
        if catalog is True:
            shutil.copy(ROOT / "catalog.yaml", root / "catalog.yaml")
        elif isinstance(catalog, str):
            (root / "catalog.yaml").write_text(catalog, encoding="utf-8")
        if journeys:
            for f in (ROOT / "journeys").glob("*.yaml"):
                shutil.copy(f, root / "journeys" / f.name)
        return TmpProject(root)

    return make
