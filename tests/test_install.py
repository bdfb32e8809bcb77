"""Clean installs: the project, and each extra alone, in a fresh virtual environment, imports what it is for.

The project is built into a wheel once (from a copy of ``pyproject.toml``, ``LICENSE``,
``README.md`` and ``streamsrc/``, so the shared tree gets no ``build/``).
Then, for the project without extras and for each extra, a fresh virtual
environment (``python -m venv``, no system site-packages) gets that wheel
and that extra from the package index, as ``pip install '.[EXTRA]'`` would,
and a subprocess (``python -I``: the repository is not on its path) imports
the modules that extra is for:

* no extra: every ``streamsrc`` module that needs no extra, the command line
  (``python -m streamsrc --help``), ``streamsrc.testing``'s ``FaultyStore``
  and ``Fault`` (pytest is not installed there);
* ``postgres``: the PostgreSQL store and read model; ``aws``: the DynamoDB
  store and every AWS integration; ``web``: ``examples/web``;
* ``notebooks``: whatever ``notebooks/*.ipynb`` import, and a kernel;
* ``test``: whatever ``tests/*.py`` import (but their own helpers), every
  ``streamsrc`` module, the pytest plugins ``pyproject.toml`` turns on;
* ``bench``: the benchmarks' reference libraries and plots.

The imports of the notebooks and tests are read from their sources, so an
import added there without its package in the extra fails here. Installing
takes about a minute (the venvs are made in parallel; pip's cache makes later
runs faster). Without ``venv``/``ensurepip`` (Debian's ``python3-venv``) the
tests skip, saying so; with ``STREAMSRC_REQUIRE_SERVICES=1`` (CI) that skip
fails (see ``conftest.py``).
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
import tomllib
import zipfile
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
INSTALL_TIMEOUT = 900
IMPORT_TIMEOUT = 300

# Modules of the package that need an extra (a module name, or a package and everything under it).
NEEDS_EXTRA: dict[str, tuple[str, ...]] = {
    "postgres": ("streamsrc.store.postgres", "streamsrc.projections.postgres"),
    "aws": ("streamsrc.store.dynamodb", "streamsrc.integrations", "streamsrc.projections.dynamodb"),
    "test": ("streamsrc.testing.conformance", "streamsrc.testing.entity"),
}
# The extras' own packages that the repository's code names in no import the test can read.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "postgres": ("asyncpg",),
    "aws": ("aiobotocore", "botocore"),
    "web": ("starlette", "examples.web.app"),
    "pydantic": ("pydantic", "streamsrc.codec"),
    "crypto": ("cryptography.hazmat.primitives.ciphers.aead", "streamsrc.transforms", "streamsrc.shredding"),
    "otel": ("opentelemetry.trace", "opentelemetry.metrics", "streamsrc.telemetry"),
    "notebooks": ("ipykernel", "matplotlib.pyplot", "pandas", "tqdm.auto", "ipywidgets"),
    "test": ("nbmake", "anyio.pytest_plugin"),  # pyproject's addopts: --nbmake; the tests: pytest.mark.anyio
    "bench": ("aiostream", "eventsourcing", "matplotlib.pyplot"),
}
EXTRAS = ("", *EXTRA_MODULES)


def _needs_extra(module: str, extras: Iterable[str]) -> bool:
    return any(
        module == prefix or module.startswith(prefix + ".")
        for extra in extras
        for prefix in NEEDS_EXTRA.get(extra, ())
    )


def package_modules() -> list[str]:
    """Every module of the ``streamsrc`` package, by name."""
    names = []
    for path in sorted((REPO / "streamsrc").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] != "__main__":
            names.append(".".join(parts))
    return names


def _imports(tree: ast.AST) -> Iterator[str]:
    """The modules ``tree`` imports, leaving out imports guarded by ``try``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Try):
            for part in (*node.handlers, *node.orelse, *node.finalbody):
                yield from _imports(part)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
        yield from _imports(node)


def imported_modules(sources: Iterable[str]) -> set[str]:
    """Every module the sources import (full names).

    >>> sorted(imported_modules(["import os.path\\nfrom streamsrc.store import open_store"]))
    ['os.path', 'streamsrc.store']
    """
    found: set[str] = set()
    for source in sources:
        flags = ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT  # notebooks await at the top level
        found.update(_imports(compile(source, "<source>", "exec", flags=flags)))
    return found


def third_party_imports(sources: Iterable[str], local: Iterable[str]) -> list[str]:
    """What the sources import, but the standard library, streamsrc and ``local`` modules.

    >>> guarded = "try:\\n    import trio\\nexcept ImportError:\\n    pass"
    >>> third_party_imports(["import os, numpy.linalg", guarded], [])
    ['numpy.linalg']
    >>> third_party_imports(["from helpers import x\\nimport streamsrc\\nawait anyio.sleep(0)"], ["helpers"])
    []
    """
    left_out = {*sys.stdlib_module_names, "streamsrc", "__future__", *local}
    return sorted(name for name in imported_modules(sources) if name.split(".")[0] not in left_out)


def notebook_sources() -> list[str]:
    sources = []
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        for cell in cells:
            if cell["cell_type"] == "code":
                lines = "".join(cell["source"]).splitlines()
                sources.append("\n".join(x for x in lines if not x.lstrip().startswith(("%", "!"))))
    return sources


def modules_for(extra: str) -> list[str]:
    """What must import after ``pip install '.[extra]'`` ('' : no extra)."""
    if extra == "":
        return [m for m in package_modules() if not _needs_extra(m, NEEDS_EXTRA)]
    modules = [*EXTRA_MODULES[extra]]
    if extra == "test":
        # The tests need every extra's package (their postgres, aws and web tests run too).
        modules += package_modules()
        tests = sorted((REPO / "tests").glob("*.py"))
        local = [p.stem for p in tests] + ["examples"]
        modules += third_party_imports((p.read_text() for p in tests), local)
    elif extra == "notebooks":
        sources = notebook_sources()
        modules += sorted(m for m in imported_modules(sources) if m.split(".")[0] == "streamsrc")
        modules += third_party_imports(sources, [])
    else:
        modules += [m for m in package_modules() if _needs_extra(m, [extra])]
    return modules


CHECK = textwrap.dedent(
    """
    import importlib, os, sys
    sys.path.insert(0, os.getcwd())  # examples/ (copied here); not the repository
    failed = []
    for name in sys.argv[1:]:
        try:
            importlib.import_module(name)
        except Exception as exc:
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    import streamsrc
    if not streamsrc.__file__.startswith(sys.prefix):
        failed.append(f"streamsrc imported from {streamsrc.__file__}, not from the virtual environment")
    print("\\n".join(failed))
    sys.exit(1 if failed else 0)
    """
)


@dataclass(frozen=True)
class Outcome:
    """What installing one extra in a fresh venv and importing its modules gave."""

    extra: str
    failure: str  # '' if everything installed and imported
    venv: Path
    seconds: float


def _run(command: list[str | Path], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONSAFEPATH")
    }
    env["MPLBACKEND"] = "Agg"
    args = [str(c) for c in command]
    try:
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:  # a failure of this extra, not of the whole module

        def text(output: str | bytes | None) -> str:
            return output.decode(errors="replace") if isinstance(output, bytes) else output or ""

        said = f"{text(exc.stdout)}{text(exc.stderr)}\ntimed out after {timeout} s"
        return subprocess.CompletedProcess(args, -9, "", said)


def _tail(result: subprocess.CompletedProcess[str]) -> str:
    lines = (result.stdout + result.stderr).strip().splitlines()
    return "\n".join([x for x in lines if not x.startswith("WARNING: Location")][-30:])


def install_and_import(extra: str, wheel: Path, root: Path) -> Outcome:
    started = time.monotonic()
    venv = root / f"venv-{extra or 'base'}"
    work = root / f"work-{extra or 'base'}"
    shutil.copytree(REPO / "examples", work / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    python = venv / "bin" / "python"

    def outcome(failure: str) -> Outcome:
        return Outcome(extra, failure, venv, time.monotonic() - started)

    # This environment's pip (often newer, with a faster resolver) installs into the new venv, which
    # then needs no pip of its own (``ensurepip`` takes seconds); without one here, the venv's own.
    own_pip = find_spec("pip") is None
    venv_options = [] if own_pip else ["--without-pip"]
    made = _run([sys.executable, "-m", "venv", *venv_options, venv], root, IMPORT_TIMEOUT)
    if made.returncode != 0:
        return outcome(f"python -m venv failed:\n{_tail(made)}")
    requirement = f"{wheel}[{extra}]" if extra else str(wheel)
    pip: list[str | Path] = (
        [python, "-m", "pip"] if own_pip else [sys.executable, "-m", "pip", "--python", python]
    )
    # --no-compile: byte-compiling thousands of files (moto, botocore) is most of an install's time.
    pip += ["install", "--disable-pip-version-check", "--no-input", "--no-compile", "-q", requirement]
    installed = _run(pip, work, INSTALL_TIMEOUT)
    if installed.returncode != 0:
        return outcome(f"pip install {requirement!r} failed:\n{_tail(installed)}")
    check: list[str | Path] = [python, "-I", "-c", CHECK, *modules_for(extra)]
    imported = _run(check, work, IMPORT_TIMEOUT)
    if imported.returncode != 0:
        return outcome(f"after pip install {requirement!r}, these imports fail:\n{_tail(imported)}")
    return outcome("")


def build_wheel(root: Path) -> Path:
    """One wheel of the project, built from a copy of its sources (verbose: the backend's warnings)."""
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.db", "*.db-*")
    shutil.copytree(REPO / "streamsrc", source / "streamsrc", ignore=junk)
    dist = root / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--disable-pip-version-check"]
    built = _run([*command, "-w", dist, source], root, INSTALL_TIMEOUT)
    assert built.returncode == 0, _tail(built)
    (root / "build.log").write_text(built.stdout + built.stderr)
    (wheel,) = dist.glob("streamsrc-*.whl")
    return wheel


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the project (its build log beside it, in ``build.log``)."""
    if find_spec("venv") is None or find_spec("ensurepip") is None:
        pytest.skip("python -m venv is unavailable here (no venv/ensurepip module: Debian's python3-venv)")
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def outcomes(built: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every extra installed in its own fresh venv, a few at a time."""
    root = tmp_path_factory.mktemp("installs")
    slowest_first = sorted(EXTRAS, key=lambda e: e not in ("test", "notebooks"))
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = pool.map(lambda extra: install_and_import(extra, built, root), slowest_first)
        return {o.extra: o for o in results}


@pytest.mark.parametrize("extra", EXTRAS, ids=[e or "no-extra" for e in EXTRAS])
def test_each_extra_alone_imports_what_it_is_for(outcomes: dict[str, Outcome], extra: str) -> None:
    outcome = outcomes[extra]
    assert not outcome.failure, outcome.failure


def test_without_extras_the_cli_and_fault_injection_work_and_pytest_is_absent(
    outcomes: dict[str, Outcome], tmp_path: Path
) -> None:
    outcome = outcomes[""]
    assert not outcome.failure, outcome.failure
    python = outcome.venv / "bin" / "python"
    script = (
        "import importlib.util, sys\n"
        "from streamsrc.testing import Fault, FaultyStore\n"
        "assert importlib.util.find_spec('pytest') is None, 'pytest is installed'\n"
        "assert 'pytest' not in sys.modules\n"
        "try:\n"
        "    from streamsrc.testing import EventStoreConformance\n"
        "except ModuleNotFoundError as exc:\n"
        "    print(exc)\n"
    )
    checked = _run([python, "-I", "-c", script], tmp_path, IMPORT_TIMEOUT)
    assert checked.returncode == 0, _tail(checked)
    assert "needs pytest" in checked.stdout
    usage = _run([python, "-I", "-m", "streamsrc", "--help"], tmp_path, IMPORT_TIMEOUT)
    assert usage.returncode == 0, _tail(usage)
    assert "copy" in usage.stdout


def test_the_wheel_has_an_spdx_license_and_builds_without_warnings(built: Path) -> None:
    with zipfile.ZipFile(built) as wheel:
        (metadata,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
        headers = wheel.read(metadata).decode().split("\n\n", 1)[0].splitlines()
    assert "License-Expression: MIT" in headers
    assert not [h for h in headers if h.startswith("License:")]
    log = (built.parent.parent / "build.log").read_text()
    assert "Warning" not in log, [line for line in log.splitlines() if "Warning" in line]


def test_all_is_every_extra() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert set(EXTRA_MODULES) == set(extras) - {"all"}
    (everything,) = extras["all"]
    assert everything.startswith("streamsrc[")
    assert everything.endswith("]")
    assert set(everything[len("streamsrc[") : -1].split(",")) == set(extras) - {"all"}
