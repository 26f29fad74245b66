"""The layout's dependency rules (README, "Layout"), read statically from every module's imports.

Every `import` and `from ... import` counts, at module level or deferred inside a function, so a
lazy import cannot slip an arrow past the rules the way a run-time check would let it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OURS = ("fine", "fine_zoo", "service", "worker", "dispatch", "learngene_store", "client", "bench", "tests", "api_tests")
STDLIB_AND_PYDANTIC = "stdlib+pydantic"

# importer (a module or a package, most specific first) -> what of ours it may import
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("fine.spec", ()),  # and from outside only the standard library and pydantic
    ("fine.common", ("fine.spec",)),  # and from outside only the standard library and numpy
    ("fine", ("fine",)),
    ("learngene_store", ("learngene_store", "fine.spec", "fine.common")),
    ("dispatch", ("dispatch", "learngene_store")),
    ("service.run_default", ("service", "client", "fine.spec")),  # `make run`'s demo: a user of the API, through the client
    ("service", ("service", "dispatch", "learngene_store", "fine.spec")),  # DESIGN.md section 4
    ("client", ("client", "fine.spec")),
    ("worker", ("worker", "dispatch", "learngene_store", "fine")),
    # the service's latency as a user sees it: the test harness's processes, the client, `make run`'s default job
    ("bench.job_latency", ("bench", "fine", "api_tests.harness", "client", "service.run_default")),
    ("bench.headline", ("bench", "fine", "service.run_default")),  # the default job beside scratch: make run's job
    ("bench", ("bench", "fine")),
    ("fine_zoo", OURS),
    ("tests", OURS),
    ("api_tests", OURS),
]
NO_TORCH = ("service", "dispatch", "learngene_store", "client", "fine.spec", "fine.common")  # the API process never imports torch
THIRD_PARTY = {"fine.spec": ("pydantic",), "fine.common": ("numpy",)}  # all these two may import besides the stdlib


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, imported name) of every import in the file; bare names of sibling files resolve to their package."""
    tree = ast.parse(path.read_text(), filename=str(path))
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    siblings = {p.stem for p in path.parent.glob("*.py")}
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importer's package, up level - 1
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            names = [f"{base}.{a.name}" if base else a.name for a in node.names]
        else:
            continue
        for name in names:
            head = name.split(".")[0]
            if head not in OURS and head in siblings and package:  # bench scripts import their neighbours by bare name
                name = f"{package}.{name}"
            found.append((node.lineno, name))
    return found


def _stdlib(name: str) -> bool:
    import sys

    return name.split(".")[0] in sys.stdlib_module_names or name.split(".")[0] == "__future__"


def violations(root: Path) -> list[str]:
    """Every import against the rules, as 'path:line: importer -> imported (why)'."""
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part in ("var", "out", "runs", "build") for part in rel.parts):
            continue
        me = module_name(path, root)
        rule = next(((who, allowed) for who, allowed in RULES if _within(me, who)), None)
        if rule is None:
            continue
        who, allowed = rule
        for line, name in imports(path, root):
            where = f"{rel}:{line}: {me} -> {name}"
            if name.split(".")[0] in OURS:
                if not any(_within(name, a) for a in allowed):
                    out.append(f"{where} ({who} may import {', '.join(allowed) or 'nothing of ours'})")
            elif any(_within(me, p) for p in NO_TORCH) and _within(name, "torch"):
                out.append(f"{where} ({who} runs in the API process, which never imports torch)")
            elif who in THIRD_PARTY and not (_stdlib(name) or any(_within(name, p) for p in THIRD_PARTY[who])):
                out.append(f"{where} ({who} imports only the standard library and {', '.join(THIRD_PARTY[who])})")
    return out


def test_the_tree_follows_the_import_rules() -> None:
    assert violations(ROOT) == []


def test_a_forbidden_import_is_reported(tmp_path: Path) -> None:
    (tmp_path / "fine").mkdir()
    (tmp_path / "fine" / "__init__.py").write_text("")
    (tmp_path / "fine" / "cli.py").write_text("def serve():\n    from service.cli import serve\n")
    (tmp_path / "fine" / "spec.py").write_text("import torch\nfrom fine import model\n")
    (tmp_path / "service").mkdir()
    (tmp_path / "service" / "cli.py").write_text("from fine.spec import JobSpec\nfrom fine import pipeline\n"
                                                "def worker():\n    import worker.__main__\n")
    found = violations(tmp_path)
    assert [v.split(": ", 1)[1].split(" (")[0] for v in found] == [
        "fine.cli -> service.cli.serve", "fine.spec -> torch", "fine.spec -> fine.model",
        "service.cli -> fine.pipeline", "service.cli -> worker.__main__",
    ]
