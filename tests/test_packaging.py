"""The wheel as a user gets it: built from the repository, installed with its runtime dependencies (pinned by
constraints.txt) into a fresh virtual environment, on the oldest Python it promises (python3.10 where one is on
PATH), and used from a folder that holds its own `models.py` and `pipeline/` package, as a YOLO checkout does."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import retail_reid

REPO = Path(__file__).resolve().parents[1]
# What the wheel is built from, as deploy/Dockerfile copies it: nothing else of the checkout goes in.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "retail_reid", "models", "gallery", "pipeline")
# Top-level packages of the optional extras, which a runtime install lacks on purpose.
EXTRAS_ONLY = {
    "torch",
    "torchvision",
    "timm",
    "pytorch_metric_learning",
    "onnx",
    "onnxscript",  # [train]
    "flask",
    "flask_wtf",
    "werkzeug",  # flask's own, imported directly by the console's URL converter
    "waitress",  # [console]
    "itsdangerous",  # [console]: the signed confirmations of gallery changes
    "ray",  # [ray]
    "matplotlib",  # [console] and [ray]: their pages' charts
    "paho",  # [mqtt]
}
# pip's words when it cannot reach an index at all (as opposed to a resolution or build failure).
OFFLINE = (
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "No route to host",
    "Could not fetch URL",
)


def _oldest_python() -> str:
    """python3.10 when one runs here (the oldest requires-python allows), else the Python running the tests.
    A pyenv shim for a version that is installed but not selected does not run: look behind it too."""
    candidates = [shutil.which("python3.10")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        candidates += sorted(str(p) for p in Path(root).glob("versions/3.10*/bin/python3.10")) if root else []
    for found in filter(None, candidates):
        if subprocess.run([found, "-c", "pass"], capture_output=True).returncode == 0:
            return found
    return sys.executable


PYTHON = _oldest_python()


def _pip(python: Path | str, *args: str, cwd: Path) -> None:
    """Run pip; skip the test (saying why) only when pip cannot reach a package index, fail on anything else."""
    done = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, cwd=cwd)
    if done.returncode == 0:
        return
    output = done.stdout + done.stderr
    offline = next((line for line in output.splitlines() if any(m in line for m in OFFLINE)), None)
    if offline:
        pytest.skip(f"pip cannot reach a package index to install the wheel's dependencies: {offline.strip()}")
    pytest.fail(f"pip {' '.join(args[:2])} failed:\n{output[-4000:]}")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel and its runtime dependencies, nothing of the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    _pip(sys.executable, "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(src), cwd=root)
    (wheel,) = (root / "dist").glob("retail_reid-*.whl")
    subprocess.run([PYTHON, "-m", "venv", str(root / "venv")], check=True)
    _pip(root / "venv/bin/python", "install", "-q", "-c", str(REPO / "constraints.txt"), str(wheel), cwd=root)
    return root / "venv"


@pytest.fixture
def user_folder(tmp_path) -> Path:
    """A folder with a user's own `models.py` and `pipeline/`, which must neither shadow nor mix with ours."""
    (tmp_path / "models.py").write_text("raise ImportError('the user models.py was imported')\n")
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline/__init__.py").write_text("raise ImportError('the user pipeline/ was imported')\n")
    return tmp_path


def _run(venv: Path, args: list[str], cwd: Path) -> str:
    done = subprocess.run([str(venv / "bin" / args[0]), *args[1:]], capture_output=True, text=True, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_api_imports_and_embeds_beside_a_users_models_and_pipeline(venv, user_folder):
    image = next(iter(sorted((REPO / "sample/grocery/val").glob("*/*.jpg"))))
    code = textwrap.dedent(
        f"""
        import importlib, pkgutil, sys
        from pathlib import Path
        from retail_reid.gallery import Gallery
        from retail_reid.models import OnnxEmbedder
        from retail_reid.images import read_image
        import retail_reid

        assert Path(retail_reid.__file__).is_relative_to({str(venv)!r}), retail_reid.__file__
        vector = OnnxEmbedder(threads=1).embed([read_image({str(image)!r})])
        assert vector.shape == (1, 384) and abs(float((vector * vector).sum()) - 1) < 1e-4  # the shipped 384-d model
        # every module imports on this Python; only those of an optional extra may miss its packages
        for module in pkgutil.walk_packages(retail_reid.__path__, "retail_reid."):
            if module.name != "retail_reid.__main__":
                try:
                    importlib.import_module(module.name)
                except ModuleNotFoundError as e:
                    assert e.name.split(".")[0] in {sorted(EXTRAS_ONLY)!r}, (module.name, e)
        assert "torch" not in sys.modules and "models" not in sys.modules and "pipeline" not in sys.modules
        assert Gallery.__module__.startswith("retail_reid.gallery.")
        from retail_reid.models.research.folds import read_folds

        assert len(read_folds().folds) == 4  # the project's folds, package data
        # what 3.10 lacks, from retail_reid.compat, behaves as 3.11's
        from retail_reid.compat import StrEnum, tomllib

        class Kind(StrEnum):
            NON_SCAN = "non_scan"

        assert f"{{Kind.NON_SCAN}}" == str(Kind.NON_SCAN) == "non_scan" and tomllib.loads("a = 1") == dict(a=1)
        print(sys.version_info[:2])
        """
    )
    version = _run(venv, ["python", "-c", code], user_folder).strip()
    assert version == ("(3, 10)" if sys.executable != PYTHON else str(sys.version_info[:2]))


def test_reid_runs_as_a_command_and_a_module(venv, user_folder):
    assert _run(venv, ["reid", "--version"], user_folder).strip() == f"reid {retail_reid.__version__}"
    helped = _run(venv, ["python", "-m", "retail_reid", "--help"], user_folder)
    assert helped.startswith("usage: reid") and all(c in helped for c in ("replay", "gallery", "embed", "events"))
