"""The package's import graph (read from the source by tools/import_graph.py): no
cycles, no import pointing up a layer, every module in a layer."""

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)


def test_no_import_cycles():
    assert import_graph.cycles(import_graph.graph()) == []


def test_no_import_points_up_a_layer():
    g = import_graph.graph()
    for module in g:
        import_graph.layer_of(module)  # raises for a module that no layer names
    assert import_graph.upward_imports(g) == []


def test_the_checker_sees_cycles_and_upward_imports():
    g = {"qkernels.ops": {"qkernels.nn"}, "qkernels.nn": {"qkernels.ops"}}
    assert import_graph.cycles(g) == [["qkernels.nn", "qkernels.ops"]]
    assert import_graph.upward_imports(g) == [("qkernels.ops", "qkernels.nn")]


def test_lazy_imports_count(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from qkernels import finetune\n")
    known = {"qkernels.finetune": Path(), "qkernels.ops": Path()}
    assert import_graph.imports_of("qkernels.ops", src, known) == {"qkernels.finetune"}


def test_reference_loads_without_the_extension():
    """The ground truth imports no kernels: loading it must not load qkernels._C."""
    # Importing qkernels.reference imports the package __init__ first, which loads _C;
    # so load the reference package's files directly, as a reader would.
    code = (
        "import importlib.util, sys, pathlib, types\n"
        f"root = pathlib.Path({str(ROOT)!r}) / 'qkernels'\n"
        "pkg = types.ModuleType('qkernels'); pkg.__path__ = [str(root)]; "
        "sys.modules['qkernels'] = pkg\n"
        "import qkernels.reference as r\n"
        "r.int_mm\n"
        "assert 'qkernels._C' not in sys.modules and 'qkernels._library' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
