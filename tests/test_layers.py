"""The layering of docs/architecture.md, read from the imports: each room imports only what
the picture allows (and the algorithms neither MPI nor CuPy)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# room -> rooms it may import (besides itself, the standard library, NumPy and ml_dtypes)
ALLOWED = {
    "kernels": {"cupy"},
    "collectives.algorithms": {"collectives.topology", "collectives.errors"},
    "collectives.execution": {"collectives.algorithms", "collectives.errors", "kernels"},
    "collectives.transport": {"collectives.errors", "kernels", "mpi4py", "cupy", "torch"},
    "collectives.simulator": {"collectives.algorithms", "collectives.execution",
                              "collectives.costmodel", "collectives.errors"},
    "collectives.compression": {"collectives.errors", "collectives.options", "kernels"},
}
FORBIDDEN_EVERYWHERE_BUT = {  # third-party modules only these rooms may import at module level
    "mpi4py": {"collectives.transport", "collectives.bootstrap"},
    "cupy": {"collectives.transport", "kernels"},
}


def room_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "kernels":
        return "kernels"
    return ".".join(parts[:2])


def imports(path: Path) -> set[str]:
    """Modules `path` imports at any level (absolute names; relative ones resolved)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    package = package.removesuffix(".__init__")
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


SOURCES = sorted(p for pkg in ("collectives", "kernels") for p in (ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path):
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    room = room_of(module)
    for target in imports(path):
        top = target.split(".")[0]
        if top not in ("collectives", "kernels", "mpi4py", "cupy", "torch"):
            continue
        target_room = room_of(target) if top in ("collectives", "kernels") else top
        if target_room == room:
            continue
        if room in ALLOWED:
            assert target_room in ALLOWED[room], f"{module} imports {target} ({target_room})"
        if top in FORBIDDEN_EVERYWHERE_BUT and not module.startswith("collectives.hooks"):
            rooms = FORBIDDEN_EVERYWHERE_BUT[top]
            assert room in rooms or _lazy(path, top), f"{module} imports {top} at module level"


def _lazy(path: Path, top: str) -> bool:
    """Whether every import of `top` in `path` sits inside a function (a lazy import)."""
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n.split(".")[0] == top for n in names):
                return False
    return True
