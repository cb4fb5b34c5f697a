"""The shape of the code: its import graph, where CuPy is imported, and who edits sys.path.

Read from the source with ``ast``, without importing anything: a lazy import
inside a function counts too.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "tinyflux"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str) -> bool:
    return (ROOT / Path(*name.split(".")) / "__init__.py").exists()


def imports_of(path: Path) -> set:
    """The tinyflux modules (and packages) that ``path`` imports, and the top-level names it imports."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                is_module = (ROOT / Path(*candidate.split("."))).with_suffix(".py").exists() or is_package(candidate)
                found.add(candidate if is_module else base)
    return found


def graph() -> dict:
    return {module_name(path): {name for name in imports_of(path) if name.startswith("tinyflux")} - {module_name(path)}
            for path in PACKAGE.rglob("*.py")}


def test_the_import_graph_has_no_circle():
    edges = graph()
    state: dict = {}  # module -> "visiting" or "done"

    def visit(module, trail):
        if state.get(module) == "done":
            return
        assert state.get(module) != "visiting", "import circle: " + " -> ".join(trail + [module])
        state[module] = "visiting"
        for target in sorted(edges.get(module, ())):
            visit(target, trail + [module])
        state[module] = "done"

    for module in sorted(edges):
        visit(module, [])


def test_no_module_imports_a_package_above_it():
    for module, targets in graph().items():
        for target in targets:
            above = is_package(target) and module.startswith(target + ".")
            assert not above, f"{module} imports {target}, a package that contains it"


def test_cupy_is_imported_in_the_backends_package_alone():
    importers = sorted(module_name(path) for path in PACKAGE.rglob("*.py")
                       if any(name == "cupy" or name.startswith("cupy.") for name in imports_of(path)))
    assert importers and all(name.startswith("tinyflux.backends") for name in importers), importers


def test_no_script_or_test_edits_sys_path():
    for folder in ("examples", "benchmarks", ".ci", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == Path(__file__).resolve():
                continue  # this test names what it looks for
            text = path.read_text(encoding="utf-8")
            assert "sys.path.insert" not in text and "sys.path.append" not in text and \
                "sys.path.remove" not in text, f"{path.relative_to(ROOT)} edits sys.path"
