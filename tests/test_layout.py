"""The shape of the code: its import graph, where CuPy is imported, and who edits sys.path.

Read from the source with ``ast``, without importing anything: a lazy import
inside a function counts too.
"""
import ast
import sys
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


STANDARD_OR_NAMED = {"numpy", "tqdm", "tinyflux"}


def test_examples_import_only_tinyflux_the_standard_library_numpy_and_tqdm():
    """The training examples; make_shape_clips.py, make_motion_clips.py (which uses the first's writers) and
    make_footage_clips.py, tools that write mp4 files, also need PyAV."""
    for path in (ROOT / "examples").glob("*.py"):
        if path.name in ("make_shape_clips.py", "make_motion_clips.py", "make_footage_clips.py"):
            continue
        tops = {name.split(".")[0] for name in imports_of(path)}
        others = {name for name in tops if name not in STANDARD_OR_NAMED and name not in sys.stdlib_module_names}
        assert not others, f"{path.name} imports {sorted(others)}"


def test_no_module_over_500_lines_and_no_function_over_80():
    for folder in ("tinyflux", "examples", "benchmarks", "tests", "docs", ".ci"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert text.count("\n") <= 500, f"{path.relative_to(ROOT)}: {text.count(chr(10))} lines"
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = node.end_lineno - node.lineno + 1
                    assert length <= 80, f"{path.relative_to(ROOT)}: {node.name} is {length} lines"


def test_no_line_over_100_characters_in_the_package_and_the_examples():
    """Lines a reader takes in without scrolling, and two files side by side on one screen."""
    too_long = [f"{path.relative_to(ROOT)}:{number}"
                for folder, pattern in (("tinyflux", "**/*.py"), ("examples", "*.py"))
                for path in sorted((ROOT / folder).glob(pattern))
                for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if len(line) > 100]
    assert not too_long, f"{len(too_long)} lines over 100 characters: {too_long[:10]}"


def test_the_examples_are_short():
    """Set for lines of at most 100 characters (the limits were 200, 210 and 40 at 120)."""
    for name, most in (("mnist_conv.py", 215), ("video_conv.py", 270), ("own_model.py", 50)):
        lines = (ROOT / "examples" / name).read_text(encoding="utf-8").count("\n")
        assert lines <= most, f"examples/{name}: {lines} lines, at most {most}"
