"""The wheel a user installs holds the whole program: it is built here with `pip wheel` from a
copy of the working tree, and every Python file below each mapped folder, every data file the
program reads and the `oellm` entry point must be in it, and every module must import from it.

pyproject.toml lists no packages (setuptools finds them below each folder of
`[tool.setuptools.package-dir]`), so a new subpackage needs no edit; a new top-level folder
with Python files needs its mapping line, and `test_every_python_folder_is_mapped` says so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

# Folders at the top of the repository that hold Python files but are not installed.
NOT_INSTALLED = {"tests", "benchmarks", "tools"}
# The data the program reads at run time, by folder: written out here rather than read from
# pyproject.toml, so that a pattern dropped there fails this test.
DATA = {"schemas": "*.json", "templates": "*.j2", "config": "**/*.yaml", "container": "*.j2"}
# Not part of the source: never copied into the build, never looked at.
SKIPPED = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
    "output",
    "bundle",
)
BUILD_TIMEOUT_S = 600


def package_dirs() -> dict[str, str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    return mapping


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    # A copy, so that the build's own `build/` and `*.egg-info` never land in the repository.
    shutil.copytree(REPO, work / "src", ignore=SKIPPED, symlinks=True)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(work / "src")]
        + ["-w", str(work / "dist")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = (work / "dist").glob("oellm-*.whl")
    return found


@pytest.fixture(scope="module")
def names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_every_python_folder_is_mapped() -> None:
    mapped = set(package_dirs().values())
    for folder in mapped:
        assert (REPO / folder).is_dir(), f"pyproject.toml maps the missing folder {folder}/"
    for folder in sorted(p for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name in NOT_INSTALLED | mapped or not python_files(folder):
            continue
        pytest.fail(
            f"{folder.name}/ holds Python files but is not installed: add "
            f'"oellm.{folder.name}" = "{folder.name}" to [tool.setuptools.package-dir] in '
            f"pyproject.toml (or add it to NOT_INSTALLED here if it is not part of the program)"
        )


def test_every_python_file_is_in_the_wheel(names: set[str]) -> None:
    missing = []
    for package, folder in package_dirs().items():
        for path in python_files(REPO / folder):
            inside = "/".join([*package.split("."), *path.relative_to(REPO / folder).parts])
            if inside not in names:
                missing.append(f"{path.relative_to(REPO)} (as {inside})")
    assert not missing, "not in the wheel:\n" + "\n".join(missing)


def test_every_data_file_is_in_the_wheel(names: set[str]) -> None:
    missing = []
    for folder, pattern in DATA.items():
        files = sorted(p for p in (REPO / folder).glob(pattern) if p.is_file())
        assert files, f"{folder}/{pattern} matches nothing: is DATA out of date?"
        for path in files:
            inside = "/".join(["oellm", *path.relative_to(REPO).parts])
            if inside not in names:
                missing.append(str(path.relative_to(REPO)))
    assert not missing, "not in the wheel:\n" + "\n".join(missing)


def test_the_wheel_declares_the_oellm_command(wheel: Path, names: set[str]) -> None:
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(entry_points).decode()
    assert "oellm = oellm.cli:main" in text


def test_every_module_imports_from_the_wheel(wheel: Path, names: set[str], tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path)
    modules = sorted(
        name.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        for name in names
        # `python -m oellm` runs the command line; importing it would too.
        if name.endswith(".py") and not name.endswith("/__main__.py")
    )
    # The unpacked wheel comes first on sys.path; each module must be found there, not in
    # the working tree that the test environment has installed in editable mode.
    probe = (
        "import importlib, sys\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        "for name in sys.argv[1:]:\n"
        "    module = importlib.import_module(name)\n"
        f"    assert module.__file__.startswith({str(tmp_path)!r}), (name, module.__file__)\n"
        "print(len(sys.argv) - 1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(len(modules))
    assert "oellm.reconciler.schedulers.slurm" in modules
