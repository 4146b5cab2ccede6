"""The import graph of the qkernels package, read from the source (ast), and its layers.

    python tools/import_graph.py            # the layers and their imports, as text
    python tools/import_graph.py --png F    # a drawing: layers top to bottom (needs matplotlib)

Every import counts, also those inside functions (a lazy import is still a dependency).
`tests/test_layering.py` fails on any cycle and on any import that points up a layer.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "qkernels"
EXTENSIONS = {"qkernels._C"}  # compiled; imports nothing from the package

# Top to bottom: a module may import from its own layer or any layer below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry points", ("qkernels.cli", "qkernels.demo")),
    (
        "fine-tuning, benchmarks",
        (
            "qkernels.finetune",
            "qkernels.checkpoints",
            "qkernels.distributed",
            "qkernels.lstm_lm",
            "qkernels.bench",
            "qkernels.bench.*",
        ),
    ),
    ("package API", ("qkernels",)),
    (
        "swap / save / data",
        (
            "qkernels.swap",
            "qkernels.io",
            "qkernels.hf",
            "qkernels._hf_hook",
            "qkernels.adapters",
            "qkernels.peft_lora",
            "qkernels.fusion",
            "qkernels.plan",
            "qkernels.data",
            "qkernels.timing",
        ),
    ),
    ("modules", ("qkernels.nn", "qkernels.nn.*")),
    ("public ops", ("qkernels.ops",)),
    ("CUDA backend choice", ("qkernels._backend",)),
    ("CUDA C++ host code, torch compositions", ("qkernels.cuda_kernels", "qkernels.torch_kernels")),
    ("Triton kernels", ("qkernels.triton", "qkernels.triton.*")),
    ("fakes, autograd", ("qkernels.meta", "qkernels.meta.*")),
    ("op definitions", ("qkernels._library",)),
    ("reference", ("qkernels.reference", "qkernels.reference.*")),
    ("leaves", ("qkernels._common", "qkernels._memory", "qkernels.op_table")),
]


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The package module that `import name` loads, or None (outside the package)."""
    while name and name not in known and name not in EXTENSIONS:
        name = name.rpartition(".")[0]
    return name if name.startswith("qkernels") and name not in EXTENSIONS else None


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up level - 1
                anchor = module.split(".")
                anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one.
            subs = [f"{base}.{a.name}" for a in node.names]
            targets = [s if s in known or s in EXTENSIONS else base for s in subs]
        else:
            continue
        for t in targets:
            r = _resolve(t, known)
            if r and r != module:
                found.add(r)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports_of(m, p, known) for m, p in known.items()}


def layer_of(module: str) -> int:
    """Index in LAYERS (0 = top); the most specific pattern wins."""
    for i, (_, patterns) in enumerate(LAYERS):
        if module in patterns:
            return i
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, p) for p in patterns):
            return i
    raise KeyError(f"{module} is in no layer of tools/import_graph.py LAYERS")


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def upward_imports(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports from a module to one in a higher layer."""
    return [(a, b) for a in sorted(g) for b in sorted(g[a]) if layer_of(b) < layer_of(a)]


def as_text(g: dict[str, set[str]]) -> str:
    lines = []
    for i, (title, _) in enumerate(LAYERS):
        members = sorted(m for m in g if layer_of(m) == i)
        lines.append(f"{title}:")
        for m in members:
            deps = ", ".join(sorted(g[m])) or "-"
            lines.append(f"  {m:<32} -> {deps}")
    return "\n".join(lines)


def draw(g: dict[str, set[str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [sorted(m for m in g if layer_of(m) == i) for i in range(len(LAYERS))]
    width = max(len(r) for r in rows)
    fig, ax = plt.subplots(figsize=(2.1 * width + 3, 0.9 * len(LAYERS) + 1))
    pos = {}
    for i, members in enumerate(rows):
        y = len(LAYERS) - 1 - i
        ax.text(-0.6, y, LAYERS[i][0], ha="right", va="center", fontsize=9, weight="bold")
        for j, m in enumerate(members):
            x = j + (width - len(members)) / 2
            pos[m] = (x, y)
            ax.text(
                x,
                y,
                m.removeprefix("qkernels.") if m != "qkernels" else "qkernels",
                ha="center",
                va="center",
                fontsize=7,
                bbox={"boxstyle": "round", "fc": "#eef3fb", "ec": "#4a6fa5"},
            )
    for a, deps in g.items():
        for b in deps:
            (x0, y0), (x1, y1) = pos[a], pos[b]
            up = y1 > y0
            ax.annotate(
                "",
                xy=(x1, y1 + 0.18),
                xytext=(x0, y0 - 0.18),
                arrowprops={
                    "arrowstyle": "->",
                    "lw": 0.5,
                    "alpha": 0.5,
                    "color": "red" if up else "#555555",
                },
            )
    ax.set_xlim(-3.5, width)
    ax.set_ylim(-0.7, len(LAYERS) - 0.3)
    ax.axis("off")
    ax.set_title("qkernels imports (arrows point to what is imported; red would point up)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=Path, help="write the drawing here")
    args = parser.parse_args()
    g = graph()
    print(as_text(g))
    problems = [f"cycle: {' <-> '.join(c)}" for c in cycles(g)]
    problems += [f"upward: {a} -> {b}" for a, b in upward_imports(g)]
    print("\n".join(problems) or "\nno cycles, no upward imports")
    if args.png:
        draw(g, args.png)
        print(f"drawing: {args.png}")


if __name__ == "__main__":
    main()
