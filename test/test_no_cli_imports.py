"""The commands `python -m llava4d_ros.train` and `python -m llava4d_ros.evaluate` are thin
front ends of llava4d_ros/training/: no module of the package imports them (a CLI module
imported as a library is how train.py came to hold presets, caching and metrics). Checked on
the source, imports in function bodies included; only a `__main__` guard may."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "llava4d_ros"
CLIS = {"llava4d_ros.train", "llava4d_ros.evaluate"}


def _is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":`"""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__"
                    for c in node.test.comparators))


def cli_imports(source: str, module: str) -> list[tuple[int, str]]:
    """(line, module) of each import of a CLI module in `source` (the module `module`, dotted;
    relative imports resolved against it), outside `__main__` guards."""
    package = module.rsplit(".", 1)[0]
    found = []

    def visit(node: ast.AST) -> None:
        if _is_main_guard(node):
            return
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        elif (isinstance(node, ast.Call) and node.args
              and isinstance(node.args[0], ast.Constant)
              and (getattr(node.func, "id", None) == "__import__"
                   or getattr(node.func, "attr", None) == "import_module")):
            names = [str(node.args[0].value)]
        found.extend((node.lineno, n) for n in names if n in CLIS)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(source))
    return found


def test_no_module_imports_a_cli():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
        if module in CLIS:
            continue
        bad += [f"{path.relative_to(PKG.parent)}:{line}: {name}"
                for line, name in cli_imports(path.read_text(encoding="utf-8"), module)]
    assert not bad, "import training/ instead of a CLI module:\n" + "\n".join(bad)


def test_checker_catches_each_form():
    src = ("from llava4d_ros.train import load_split\n"
           "def f():\n"
           "    import llava4d_ros.evaluate\n"
           "    from llava4d_ros import train\n"
           "    from .. import evaluate\n"
           "    __import__('llava4d_ros.train')\n"
           "from llava4d_ros.training.scene_cache import load_split\n"
           "if __name__ == '__main__':\n"
           "    from llava4d_ros.train import main\n")
    lines = sorted({line for line, _ in cli_imports(src, "llava4d_ros.training.x")})
    assert lines == [1, 3, 4, 5, 6]
