"""Guard against TensorRT-LLM APIs that do not exist: every tensorrt_llm symbol our code uses
must be listed, with its signature as read in the 1.2.1 source, in
oea_trt/integrations/trtllm/symbols_1_2_1.json; and importing oea_trt never imports tensorrt_llm."""
import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYMBOLS = json.loads((ROOT / "oea_trt" / "integrations" / "trtllm" / "symbols_1_2_1.json").read_text())
ENTRIES = {(s["module"], s["name"]): s for s in SYMBOLS["symbols"]}
SCANNED = ["oea_trt", "builder", "examples", "scripts", "tests"]


def tensorrt_llm_uses(source: str):
    """(module, name, line) for every tensorrt_llm symbol a module imports or reaches by attribute:
    `from tensorrt_llm.x import A` -> (tensorrt_llm.x, A); `A.b` -> (tensorrt_llm.x, A.b);
    `import tensorrt_llm` + `tensorrt_llm.f()` -> (tensorrt_llm, f)."""
    tree = ast.parse(source)
    modules, names, uses = {}, {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "tensorrt_llm":
                    modules[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "tensorrt_llm"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "tensorrt_llm":
            for alias in node.names:
                uses.append((node.module, alias.name, node.lineno))
                names[alias.asname or alias.name] = (node.module, alias.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            root = node.value.id
            if root in modules:
                uses.append((modules[root], node.attr, node.lineno))
            elif root in names:
                module, name = names[root]
                uses.append((module, f"{name}.{node.attr}", node.lineno))
    return uses


def _documented(module, name):
    if (module, name) in ENTRIES:
        return True
    owner, _, member = name.partition(".")
    entry = ENTRIES.get((module, owner))
    return bool(member) and entry is not None and member in entry["signature"]


def _files():
    for top in SCANNED:
        base = ROOT / top
        if base.exists():
            yield from sorted(base.rglob("*.py"))


def test_every_tensorrt_llm_symbol_we_use_is_listed():
    missing = []
    seen = set()
    for path in _files():
        for module, name, line in tensorrt_llm_uses(path.read_text()):
            seen.add((module, name.split(".")[0]))
            if not _documented(module, name):
                missing.append(f"{path.relative_to(ROOT)}:{line}: {module}.{name}")
    assert not missing, "tensorrt_llm symbols used but not in symbols_1_2_1.json:\n" + "\n".join(missing)
    # The list has no stale entries: every listed symbol is used where it says.
    for (module, name), entry in ENTRIES.items():
        for rel in entry["used_by"]:
            uses = {(m, n) for m, n, _ in tensorrt_llm_uses((ROOT / rel).read_text())}
            assert (module, name) in uses or (module, name.split(".")[0]) in uses, f"{module}.{name} not used in {rel}"


def test_entries_say_where_they_were_read():
    for entry in SYMBOLS["symbols"]:
        assert entry["signature"] and entry["source"] and entry["read_at"], entry
    assert SYMBOLS["tensorrt_llm_version"] == "1.2.1"


@pytest.mark.parametrize("snippet,bad", [
    ("from tensorrt_llm.layers.moe import MoeMagic\n", "tensorrt_llm.layers.moe.MoeMagic"),
    ("import tensorrt_llm\ntensorrt_llm.build_everything()\n", "tensorrt_llm.build_everything"),
    ("from tensorrt_llm.runtime import ModelRunnerCpp\nModelRunnerCpp.from_engine('x')\n",
     "tensorrt_llm.runtime.ModelRunnerCpp.from_engine"),
])
def test_the_guard_catches_unknown_symbols(snippet, bad):
    found = [f"{m}.{n}" for m, n, _ in tensorrt_llm_uses(snippet) if not _documented(m, n)]
    assert bad in found


def test_importing_oea_trt_never_imports_tensorrt_llm():
    code = (
        "import sys, oea_trt, oea_trt.integrations.trtllm, oea_trt.integrations.trtllm.build, oea_trt.integrations.trtllm.build_plan, "
        "oea_trt.integrations.trtllm_torch.settings, oea_trt.plugin, oea_trt.runtime, oea_trt.integrations.triton_server, "
        "oea_trt.integrations.triton_server.validate\n"
        "from oea_trt.cli import build_parser; build_parser()\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorrt_llm', 'tensorrt', 'transformers'))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
