"""The package layers (docs/architecture.md, "Layers"): a module imports only its own layer's
package or a lower layer, wherever the import is written (module top, function body or
TYPE_CHECKING block). A lower package reaching up is how cycles and hidden coupling start."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LAYERS: list[tuple[str, ...]] = [
    # kernel: settings, errors, topics, processes; imports nothing above it
    (
        "tokentrail.errors",
        "tokentrail.settings",
        "tokentrail.topics",
        "tokentrail.processes",
        "tokentrail.arguments",
        "tokentrail.kafka_log",
        "tokentrail.kafka_reach",
    ),
    ("schemas",),
    # adapters of the outside world, independent of each other
    ("tokentrail.storage", "tokentrail.control", "tokentrail.broker"),
    # domain logic the parts wire into their engines (detection knows no Bytewax or Kafka)
    ("detection",),
    # the product's parts and the fake provider, independent of each other
    ("flows", "gateway", "alerting", "mock_upstream"),
    # the CLI hub and what drives every part
    ("tokentrail.cli", "tokentrail.demo", "tokentrail.config_docs", "tokentrail.__main__", "tokentrail"),
]
KERNEL = LAYERS[0]
ENTRY_POINTS = {"gateway.__main__", "mock_upstream.__main__"}
"""`python -m <part>` runs the hub's parser for that part: an entry point may use the hub."""
TOP_LEVEL = {package.split(".")[0] for layer in LAYERS for package in layer}


def package_of(module: str) -> str:
    """The layered package a module belongs to (the longest listed prefix)."""
    found = [p for layer in LAYERS for p in layer if module == p or module.startswith(p + ".")]
    if not found:
        raise AssertionError(f"{module} has no layer: add its package to LAYERS in {Path(__file__).name}")
    return max(found, key=len)


def layer_of(package: str) -> int:
    return next(index for index, layer in enumerate(LAYERS) if package in layer)


def resolve(module: str, name: str | None) -> str:
    """`from module import name`: the submodule when `name` is one, else `module`."""
    if name is not None:
        candidate = ROOT / Path(*module.split("."), name)
        if candidate.with_suffix(".py").exists() or (candidate / "__init__.py").exists():
            return f"{module}.{name}"
    return module


def our_modules() -> dict[str, Path]:
    modules = {}
    for top in sorted(TOP_LEVEL):
        for path in (ROOT / top).rglob("*.py") if (ROOT / top).is_dir() else ():
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports_of(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, resolve(node.module, alias.name)) for alias in node.names]
    return [(line, name) for line, name in found if name.split(".")[0] in TOP_LEVEL]


def violations(module: str, imported: str) -> str | None:
    """Why `module` may not import `imported` (None: it may)."""
    if module in ENTRY_POINTS:
        return None
    mine, theirs = package_of(module), package_of(imported)
    if mine == theirs or (mine in KERNEL and theirs in KERNEL):
        return None
    if layer_of(theirs) > layer_of(mine):
        return f"imports {imported}, a higher layer"
    if layer_of(theirs) == layer_of(mine) and mine not in LAYERS[-1]:
        return f"imports {imported}, a sibling that must stay independent"
    return None


def test_no_package_imports_a_higher_layer_or_a_sibling():
    problems = [
        f"{path.relative_to(ROOT)}:{line}: {module} {why}"
        for module, path in our_modules().items()
        for line, imported in imports_of(path)
        if (why := violations(module, imported))
    ]
    assert problems == []


@pytest.mark.parametrize(
    "module, imported",
    [
        ("tokentrail.settings", "tokentrail.storage"),  # kernel reaching up
        ("tokentrail.storage.cli", "tokentrail.cli"),  # an adapter reaching into the hub
        ("flows.enrich", "gateway.records"),  # sibling parts
        ("schemas.models", "tokentrail.control.records"),
    ],
)
def test_the_rule_catches_upward_and_sideways_imports(module, imported):
    assert violations(module, imported) is not None


def test_every_module_has_a_layer_and_function_level_imports_count(tmp_path):
    assert set(map(package_of, our_modules())) <= {p for layer in LAYERS for p in layer}
    hidden = tmp_path / "hidden.py"
    hidden.write_text("def f():\n    from tokentrail.cli import CliError\n")
    assert imports_of(hidden) == [(2, "tokentrail.cli")]
