"""The package as users get it: the wheel and the sdist build, the wheel installs and runs, typed.

- `pyproject.toml` lists every package of the tree (so none is left out of
  the wheel), and the example files ship inside it.
- A wheel and an sdist are built; the wheel is installed into a fresh
  virtual environment, where `dvp demo` runs, `dvp examples DIR` copies the
  example files, `dvp replay` replays one, and `py.typed` marks `engine`.
- The sdist holds what its tests need (conftest.py and the shared worlds)
  and the examples, and its tests run against the installed wheel.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from setuptools import find_packages

ROOT = Path(__file__).resolve().parent.parent


def test_pyproject_lists_every_package_of_the_tree():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set(find_packages(str(ROOT), include=["engine*", "protocols*", "benchmarks*"])) | {"protocols.examples"}
    assert listed == found


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode and "No module named build" in done.stderr:
        pytest.skip("the 'build' package is not installed: pip install -e '.[test]'")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "license" not in done.stderr.lower() or "deprecat" not in done.stderr.lower(), done.stderr
    return next(out.glob("*.whl")), next(out.glob("*.tar.gz"))


def test_the_sdist_holds_its_tests_and_examples(built):
    _wheel, sdist = built
    with tarfile.open(sdist) as tar:
        names = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in tar.getnames() if len(Path(n).parts) > 1}
    assert {"tests/conftest.py", "tests/dvp_world.py", "LICENSE", "examples/gross.jsonl", "README.md"} <= names
    assert any(n.startswith("tests/test_") for n in names)


def test_the_wheel_installs_in_a_fresh_venv_and_runs(built, tmp_path):
    wheel, sdist = built
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel), "pytest", "hypothesis"],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-2000:]
    dvp = venv / "bin" / "dvp"
    demo = subprocess.run([str(dvp), "demo"], capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    copied = tmp_path / "ex"
    done = subprocess.run([str(dvp), "examples", str(copied)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and (copied / "gross.jsonl").exists(), done.stderr
    replayed = subprocess.run([str(dvp), "replay", str(copied / "net.jsonl")], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    typed = subprocess.run([str(python), "-c", "import engine, os; print(os.path.exists(os.path.join("
                            "os.path.dirname(engine.__file__), 'py.typed')))"], capture_output=True, text=True)
    assert typed.stdout.strip() == "True"
    # the sdist's tests run against the installed wheel (a quick file of them)
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "sdist", filter="data")
    root = next((tmp_path / "sdist").iterdir())
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    ran = subprocess.run([str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          str(root / "tests" / "test_waitlist.py"), "--rootdir", str(root)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
