"""`oellm container render|build`: definitions of the training images, and a build that runs
only where a container runtime is installed (a fake apptainer stands in for it here).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from oellm.cli import main
from oellm.container.build import ContainerError, Request, bootstrap, render_definition

SECTIONS = ["%labels", "%environment", "%post", "%test"]


def sections(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {"header": []}
    current = "header"
    for line in text.splitlines():
        if line.startswith("%"):
            current = line.strip()
            found[current] = []
        elif line.strip() and not line.startswith("#"):
            found[current].append(line.strip())
    return found


@pytest.mark.parametrize(
    ("variant", "source", "repo"),
    [
        ("cuda", "nvcr.io/nvidia/pytorch:25.08-py3", "https://github.com/NVIDIA/Megatron-LM.git"),
        ("rocm", "rocm/pytorch:latest", "https://github.com/ROCm/Megatron-LM.git"),
    ],
)
def test_render_prints_a_definition(
    variant: str, source: str, repo: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["container", "render", variant, "--megatron-ref", "core_v0.12.0"]) == 0
    text = capsys.readouterr().out
    parts = sections(text)
    assert parts["header"] == ["Bootstrap: docker", f"From: {source}"]
    assert [name for name in parts if name != "header"] == SECTIONS
    assert "oellm.megatron.ref core_v0.12.0" in parts["%labels"]
    assert f"git clone --filter=blob:none {repo} /opt/Megatron-LM" in parts["%post"]
    assert "git -C /opt/Megatron-LM checkout core_v0.12.0" in parts["%post"]
    assert "export MEGATRON_LM_DIR=/opt/Megatron-LM" in parts["%environment"]


def test_render_writes_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "megatron-cuda.def"
    assert main(["container", "render", "cuda", "-o", str(out)]) == 0
    assert out.read_text().startswith("Bootstrap: docker\n")
    assert capsys.readouterr().out == f"wrote {out}\n"


@pytest.mark.parametrize("package", ["numpy<2", "a b", "x; touch /pwned", "$(id)", "it's"])
def test_extra_packages_are_shell_words(package: str) -> None:
    text = render_definition(Request("cuda", packages=[package]))
    (line,) = [line for line in text.splitlines() if "pip install" in line]
    assert shlex.split(line)[-1] == package


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("docker://rocm/pytorch:x", ("docker", "rocm/pytorch:x")),
        ("nvcr.io/nvidia/pytorch:25.08-py3", ("docker", "nvcr.io/nvidia/pytorch:25.08-py3")),
        ("localimage:/appl/images/lumi.sif", ("localimage", "/appl/images/lumi.sif")),
        ("/appl/images/lumi.sif", ("localimage", "/appl/images/lumi.sif")),
        ("./base.sif", ("localimage", "./base.sif")),
    ],
)
def test_base_images(base: str, expected: tuple[str, str]) -> None:
    assert bootstrap(base) == expected


@pytest.mark.parametrize(
    "args",
    [
        ["--base", "ubuntu\n%post\n  touch /pwned"],
        ["--megatron-ref", "main; id"],
        ["--megatron-repo", "https://x y"],
        ["--pip", "a\nb"],
    ],
)
def test_values_a_definition_cannot_hold_are_refused(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["container", "render", "cuda", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err


def test_unknown_variant_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["container", "render", "tpu"]) == 2
    assert "tpu" in capsys.readouterr().err


def test_render_definition_rejects_unknown_variant() -> None:
    with pytest.raises(ContainerError):
        render_definition(Request("tpu"))


# --- build -------------------------------------------------------------------------------

FAKE_RUNTIME = """#!/bin/bash
# A fake {name}: records its argv; `build IMAGE DEF` writes IMAGE unless told to fail.
printf '%s\\n' "$0" "$@" > "$FAKE_LOG"
if [ -n "${{FAKE_FAIL:-}}" ]; then echo "FATAL: While performing build: oops" >&2; exit 255; fi
image="${{@: -2:1}}"
echo "INFO: Build complete: $image"
: > "$image"
"""


@pytest.fixture
def fake_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds only a folder of fakes (and what bash needs): no real runtime is found."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}/usr/bin{os.pathsep}/bin")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "argv.txt"))
    return folder


def install(folder: Path, name: str) -> None:
    fake = folder / name
    fake.write_text(FAKE_RUNTIME.format(name=name))
    fake.chmod(0o755)


def test_build_without_a_runtime_exits_2(
    fake_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("apptainer", "singularity"):
        assert not (fake_path / name).exists()
    image = tmp_path / "img" / "train.sif"
    if any(Path(p, "apptainer").exists() for p in ("/usr/bin", "/bin")):
        pytest.skip("a real apptainer is installed in /usr/bin")
    assert main(["container", "build", "cuda", str(image)]) == 2
    err = capsys.readouterr().err
    assert "apptainer or singularity is not installed" in err
    assert "oellm container render" in err
    assert not image.parent.exists()


@pytest.mark.parametrize(("installed", "asked", "used"), [
    (["apptainer", "singularity"], None, "apptainer"),
    (["singularity"], None, "singularity"),
    (["apptainer", "singularity"], "singularity", "singularity"),
])  # fmt: skip
def test_build_runs_the_runtime(
    installed: list[str],
    asked: str | None,
    used: str,
    fake_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in installed:
        install(fake_path, name)
    image = tmp_path / "images" / "train.sif"
    args = ["container", "build", "rocm", str(image), "--fakeroot", "--pip", "a b"]
    assert main([*args, *(["--runtime", asked] if asked else [])]) == 0
    definition = image.with_name("train.sif.def")
    argv = (tmp_path / "argv.txt").read_text().splitlines()
    assert argv == [str(fake_path / used), "build", "--fakeroot", str(image), str(definition)]
    assert definition.read_text() == render_definition(Request("rocm", packages=["a b"]))
    captured = capsys.readouterr()
    assert captured.out == f"built {image}\n"
    assert "Build complete" in captured.err


def test_failed_build_exits_1_and_shows_the_output(
    fake_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    install(fake_path, "apptainer")
    monkeypatch.setenv("FAKE_FAIL", "1")
    assert main(["container", "build", "cuda", str(tmp_path / "x.sif")]) == 1
    err = capsys.readouterr().err
    assert "While performing build: oops" in err
    assert re.search(r"apptainer build failed \(exit 255\)", err)


def test_existing_image_needs_force(
    fake_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    install(fake_path, "apptainer")
    image = tmp_path / "x.sif"
    image.write_text("old")
    assert main(["container", "build", "cuda", str(image)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["container", "build", "cuda", str(image), "--force"]) == 0
    assert "--force" in (tmp_path / "argv.txt").read_text().splitlines()
