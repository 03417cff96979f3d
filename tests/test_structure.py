"""The package structure docs/CONTRACTS.md promises, checked: the layers' import rules (by a
static scan of every import statement, function-level ones included, and by importing the
engine in a fresh interpreter) and the size limits of classes and functions."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

#: heavy or upper-layer packages the engine (index/ minus index/workflows/) never imports
ENGINE_FORBIDDEN = ("PIL", "torch", "torchvision", "timm", "matplotlib", "api", "index.workflows")
#: package -> what it never imports (data flows api -> index -> embedder, never back)
FORBIDDEN = {
    "engine": ENGINE_FORBIDDEN,
    "index": ("api",),
    "embedder": ("index", "api"),
}
#: modules whose import must leave these out of ``sys.modules`` (what the scan cannot see:
#: an allowed import that loads a forbidden one in turn)
NOT_LOADED_BY_ENGINE = ("PIL", "torch", "matplotlib", "api", "index.workflows")

MAX_CLASS_LINES = 400
MAX_FUNCTION_LINES = 60
SIZED_PACKAGES = ("embedder", "index", "api")


def _modules(package: str, root: Path = REPO) -> Iterator[Path]:
    yield from sorted((root / package).rglob("*.py"))


def _module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, at any depth; ``from x
    import y`` yields ``x.y`` too (``y`` may be a module)."""
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if base else alias.name


def _is_within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _layers_of(path: Path, root: Path) -> list[str]:
    top = path.relative_to(root).parts[0]
    layers = [top]
    if top == "index" and not _is_within(_module_name(path, root), "index.workflows"):
        layers.append("engine")
    return layers


def import_violations(root: Path = REPO) -> list[str]:
    found = []
    for package in ("embedder", "index"):
        for path in _modules(package, root):
            rules = [rule for layer in _layers_of(path, root) for rule in FORBIDDEN.get(layer, ())]
            for line, module in _imports(path, root):
                for rule in rules:
                    if _is_within(module, rule):
                        where = path.relative_to(root).as_posix()
                        found.append(f"{where}:{line} imports {module} (no {rule} here)")
    return sorted(set(found))


def test_no_layer_imports_what_its_rule_forbids():
    assert import_violations() == []


def test_the_scan_sees_function_level_and_relative_imports(tmp_path):
    """The scan itself: lazy and relative imports that break a rule are caught, and the
    application layer may import what the engine may not."""
    (tmp_path / "index" / "workflows").mkdir(parents=True)
    (tmp_path / "embedder").mkdir()
    lazy = "def f():\n    from .workflows import collection\n    import PIL.Image\n"
    (tmp_path / "index" / "engine_part.py").write_text(lazy)
    (tmp_path / "index" / "workflows" / "job.py").write_text("import PIL\nimport api.errors\n")
    (tmp_path / "embedder" / "part.py").write_text("from index import names\n")
    assert import_violations(tmp_path) == [
        "embedder/part.py:1 imports index (no index here)",
        "embedder/part.py:1 imports index.names (no index here)",
        "index/engine_part.py:2 imports index.workflows (no index.workflows here)",
        "index/engine_part.py:2 imports index.workflows.collection (no index.workflows here)",
        "index/engine_part.py:3 imports PIL.Image (no PIL here)",
        "index/workflows/job.py:2 imports api.errors (no api here)",
    ]


def _engine_modules() -> list[str]:
    return [
        _module_name(path)
        for path in _modules("index")
        if not _is_within(_module_name(path), "index.workflows")
    ]


def test_importing_the_engine_loads_no_image_model_or_plotting_library():
    script = (
        "import importlib, json, sys\n"
        f"for name in {_engine_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(k for k in {NOT_LOADED_BY_ENGINE!r} if k in sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert json.loads(done.stdout.splitlines()[-1]) == []


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def commands_named(path: Path) -> list[str]:
    """Strings of ``path`` (docstrings and comments aside) that tell the user to run a
    ``shellid`` command ("check it with: shellid doctor", "run reindex again"): the words of
    a remedy, which belong to ``api``."""
    from api.cli import COMMANDS

    named = re.compile(rf"(?:with:? |run )(?:shellid )?(?:{'|'.join(COMMANDS)})\b")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _docstrings(tree)
    return [
        f"{path.relative_to(REPO).as_posix()}:{node.lineno} {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
        if id(node) not in skip and named.search(node.value)
    ]


def test_index_messages_name_a_remedy_not_a_command():
    found = [hit for path in _modules("index") for hit in commands_named(path)]
    assert found == []
    assert commands_named(REPO / "api" / "remedies.py")  # where the words are: seen


@dataclass(frozen=True)
class Sized:
    key: str  # "path:qualified name"
    kind: str  # "class" or "function"
    lines: int

    @property
    def limit(self) -> int:
        return MAX_CLASS_LINES if self.kind == "class" else MAX_FUNCTION_LINES


def _sized(path: Path, root: Path = REPO) -> Iterator[Sized]:
    """Every class and function of ``path`` with its length: first decorator or ``def`` line
    to its last line."""
    where = path.relative_to(root).as_posix()

    def visit(node: ast.AST, prefix: str) -> Iterator[Sized]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                lines = (child.end_lineno or child.lineno) - first + 1
                kind = "class" if isinstance(child, ast.ClassDef) else "function"
                yield Sized(f"{where}:{prefix}{child.name}", kind, lines)
                yield from visit(child, f"{prefix}{child.name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), "")


def _all_sized() -> list[Sized]:
    return [
        item for package in SIZED_PACKAGES for path in _modules(package) for item in _sized(path)
    ]


def test_no_class_or_function_is_over_its_size_limit():
    over = [
        f"{item.key}: {item.lines} lines (limit {item.limit})"
        for item in _all_sized()
        if item.lines > item.limit
    ]
    assert over == []


def test_sizes_count_from_the_first_decorator_to_the_last_line(tmp_path):
    source = "@first\n@second(\n    1,\n)\nclass C:\n    def m(self):\n\n        return 1\n"
    (tmp_path / "module.py").write_text(source)
    sizes = {item.key: (item.kind, item.lines) for item in _sized(tmp_path / "module.py", tmp_path)}
    assert sizes == {"module.py:C": ("class", 8), "module.py:C.m": ("function", 3)}
