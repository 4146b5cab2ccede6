"""`qkernels bench --suite llm`: LLM generation on the CPU, qkernels against what people
run instead — Hugging Face fp32 / bf16 and llama.cpp Q8_0 (through llama-cpp-python,
the `llm` extra) — on the same weights, each implementation alone in its own process
(qkernels.bench.llm_worker), so each peak RSS is its own.

The model is a config-built Llama (TinyLlama-shaped by default: 2048 hidden, 5632 MLP,
22 layers, 32 heads, 4 KV heads, 32000 vocabulary; random weights: speed only) saved once
as safetensors, or a Hugging Face directory given with --model. llama.cpp gets the same
weights through llama.cpp's own converter (`convert_hf_to_gguf.py --outtype q8_0`, from
the llama-cpp-python source of the installed version). A config-built model has no
tokenizer; llama.cpp's converter needs one, so a small SentencePiece model is trained
on the Python docs' paragraphs (the GGUF pads its vocabulary to the model's), and its ids
of those paragraphs are the "real text" of the top-1 agreement check.

Measured per implementation: prefill tokens/s (one forward of 128 and 512 tokens, last
logits kept), decode tokens/s (greedy generation after a 32-token prompt, per-step time
from the second new token on), peak RSS, and the top-1 next-token agreement with HF fp32
on the agreement text. Compiled rows run `generate(cache_implementation="static")`
under torch.compile (fullgraph) and record whether anything recompiled while timed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from qkernels.bench import llm_worker
from qkernels.bench.llm_worker import COMPILED, HF_IMPLS, LLAMA_CPP
from qkernels.bench.report import table

TINYLLAMA = dict(
    hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
    num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048,
)  # fmt: skip
CI_LLAMA = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, vocab_size=1000, max_position_embeddings=256,
)  # fmt: skip
FULL = {"prompt": 32, "decode": 48, "prefill": [128, 512], "agree": 512, "repeats": 3}
CI = {"prompt": 8, "decode": 6, "prefill": [16], "agree": 32, "repeats": 1}
SPM_VOCAB = 800  # the SentencePiece model made for llama.cpp's converter
CACHE = Path(os.environ.get("QKERNELS_CACHE", Path.home() / ".cache" / "qkernels"))


@dataclass
class LlmRow:
    impl: str
    run: int
    decode_tps: float
    prefill_tps: dict  # prompt length -> tokens/s
    peak_rss_mb: float
    top1_agreement: float  # with HF fp32 on the agreement text
    load_s: float
    decode_tps_runs: list = field(default_factory=list)
    compile: dict = field(default_factory=dict)  # graphs, recompiles while timed, breaks
    note: str = ""  # an implementation that could not run: why


def default_impls(compile_: bool) -> list[str]:
    impls = list(HF_IMPLS)
    if compile_:
        impls += [f"{i}{COMPILED}" for i in HF_IMPLS if i != "hf fp32"]
    return impls + [LLAMA_CPP]


def prepare_model(workdir: Path, sizes: dict, given: str | None) -> tuple[Path, list[int]]:
    """The Hugging Face directory every implementation loads — `given` (never written
    to), or a config-built one (random weights, seed 0, fp32 safetensors) with a
    SentencePiece tokenizer.model made here — and the agreement text's ids."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from qkernels.data import pydoc_paragraphs

    text = "\n".join(pydoc_paragraphs())
    if given:
        from transformers import AutoTokenizer

        return Path(given), AutoTokenizer.from_pretrained(given)(text)["input_ids"]
    hf_dir = workdir / "hf"
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**sizes)).save_pretrained(hf_dir)
    return hf_dir, _sentencepiece_ids(text, hf_dir, workdir)


def _sentencepiece_ids(text: str, hf_dir: Path, workdir: Path) -> list[int]:
    """A SentencePiece model trained on `text` here, written as hf_dir's tokenizer.model
    (llama.cpp's converter needs a tokenizer), and its ids of `text`. Without the
    sentencepiece package (the `llm` extra): seeded random ids, and no tokenizer (so no
    llama.cpp row, which needs the extra anyway)."""
    try:
        import sentencepiece as spm
    except ImportError:
        vocab = json.loads((hf_dir / "config.json").read_text())["vocab_size"]
        return torch.randint(0, vocab, (4096,), generator=torch.Generator().manual_seed(0)).tolist()

    corpus = workdir / "corpus.txt"
    corpus.write_text(text)
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(workdir / "spm"), vocab_size=SPM_VOCAB,
        model_type="bpe", minloglevel=2,
    )  # fmt: skip
    shutil.copy(workdir / "spm.model", hf_dir / "tokenizer.model")
    return spm.SentencePieceProcessor(model_file=str(workdir / "spm.model")).encode(text)


def llama_cpp_source() -> Path:
    """llama.cpp's tree as vendored in the installed llama-cpp-python's source
    distribution: $QKERNELS_LLAMA_CPP_SRC, or unpacked once into the cache (pip download
    from the configured index)."""
    if src := os.environ.get("QKERNELS_LLAMA_CPP_SRC"):
        return Path(src)
    import llama_cpp

    version = llama_cpp.__version__
    tree = CACHE / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (tree / "convert_hf_to_gguf.py").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "-d", str(CACHE), f"llama-cpp-python=={version}"],
            check=True, capture_output=True,
        )  # fmt: skip
        with tarfile.open(CACHE / f"llama_cpp_python-{version}.tar.gz") as sdist:
            sdist.extractall(CACHE, filter="data")
    return tree


def convert_to_gguf(hf_dir: Path, out: Path) -> Path:
    """llama.cpp's own converter, Q8_0 (every matrix, output layer included)."""
    script = llama_cpp_source() / "convert_hf_to_gguf.py"
    done = subprocess.run(
        [sys.executable, str(script), str(hf_dir), "--outtype", "q8_0", "--outfile", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"convert_hf_to_gguf failed: {done.stderr.strip()[-300:]}")
    return out


def run_worker(spec: dict) -> dict:
    done = subprocess.run(
        [sys.executable, llm_worker.__file__, json.dumps(spec)],
        capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(done.stderr.strip().splitlines()[-1][:300] if done.stderr else "failed")
    return json.loads(lines[-1].removeprefix("RESULT "))


def run_llm_suite(
    workdir: Path, ci: bool = False, compile_: bool = False, runs: int = 2,
    model: str | None = None, progress: bool = True, agree_ids: list[int] | None = None,
) -> list[LlmRow]:  # fmt: skip
    """Each implementation in its own process, `runs` times in alternating order.
    `agree_ids`: the token ids of the agreement text (default: the Python docs' first
    paragraphs, as many tokens as the shape says)."""
    from tqdm import tqdm

    shape = CI if ci else FULL
    if agree_ids is not None and model is not None:
        hf_dir, ids = Path(model), list(agree_ids)
    else:
        hf_dir, ids = prepare_model(workdir, CI_LLAMA if ci else TINYLLAMA, model)
        ids = list(agree_ids or ids[: shape["agree"]])
    impls, missing = default_impls(compile_), {}
    gguf = None
    try:  # without llama-cpp-python, llama_cpp_source() says so
        gguf = convert_to_gguf(hf_dir, workdir / "model-q8_0.gguf")
    except Exception as e:  # noqa: BLE001 - a peer that cannot run here: say why, go on
        missing[LLAMA_CPP] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    spec = {
        "hf_dir": str(hf_dir), "gguf": str(gguf), "threads": torch.get_num_threads(),
        "prompt": shape["prompt"], "decode": shape["decode"], "prefill": shape["prefill"],
        "agree_ids": ids, "repeats": shape["repeats"],
    }  # fmt: skip
    jobs = [(run, impl) for run in range(runs) for impl in (impls if run % 2 == 0 else impls[::-1])]
    results: dict[tuple[int, str], dict] = {}
    for run, impl in tqdm(jobs, desc="llm bench", disable=not progress, leave=False):
        if impl in missing:
            continue
        try:
            results[(run, impl)] = run_worker({**spec, "impl": impl})
        except Exception as e:  # noqa: BLE001
            missing[impl] = f"{type(e).__name__}: {str(e)[:200]}"
    rows = []
    for (run, impl), r in sorted(results.items()):
        reference = results.get((run, "hf fp32"), {}).get("top1")
        agree = float("nan")
        if reference:
            agree = sum(a == b for a, b in zip(r["top1"], reference, strict=True)) / len(reference)
        extra = {k: r[k] for k in ("graphs", "recompiled_while_timed", "graph_breaks") if k in r}
        rows.append(
            LlmRow(
                impl, run, r["decode_tps"], r["prefill_tps"], r["peak_rss_mb"], agree,
                r["load_s"], r["decode_tps_runs"], extra,
            )
        )  # fmt: skip
    nan = float("nan")
    rows += [LlmRow(impl, 0, nan, {}, nan, nan, nan, note=why) for impl, why in missing.items()]
    return rows


def summarize(rows: list[LlmRow]) -> list[dict]:
    """Per implementation, medians over runs and the ratios to llama.cpp Q8_0 (tokens/s:
    ours / llama.cpp; RSS: ours / llama.cpp)."""
    import statistics

    by_impl: dict[str, list[LlmRow]] = {}
    for r in rows:
        if not r.note:
            by_impl.setdefault(r.impl, []).append(r)

    def med(values) -> float:
        values = [v for v in values if v == v]
        return statistics.median(values) if values else float("nan")

    out = []
    for impl, rs in by_impl.items():
        entry = {
            "impl": impl,
            "decode_tps": med(r.decode_tps for r in rs),
            "peak_rss_mb": med(r.peak_rss_mb for r in rs),
            "top1_agreement": med(r.top1_agreement for r in rs),
        }
        for n in rs[0].prefill_tps:
            entry[f"prefill{n}_tps"] = med(r.prefill_tps[n] for r in rs)
        out.append(entry)
    peer = next((e for e in out if e["impl"] == LLAMA_CPP), None)
    for entry in out:
        for key in [k for k in entry if k.endswith("_tps") or k == "peak_rss_mb"]:
            entry[f"{key} / llama.cpp"] = entry[key] / peer[key] if peer else float("nan")
    return out


def format_llm_table(rows: list[LlmRow]) -> str:
    summary = summarize(rows)
    prefills = sorted({k for e in summary for k in e if k.startswith("prefill") and "/" not in k})
    columns = [("impl", "impl", "<26"), ("decode tok/s", "decode_tps", ">12.2f"),
               ("x llama.cpp", "decode_tps / llama.cpp", ">11.2f")]  # fmt: skip
    for key in prefills:
        n = key.removeprefix("prefill").removesuffix("_tps")
        columns += [
            (f"prefill{n} tok/s", key, ">15.1f"),
            ("x llama.cpp", f"{key} / llama.cpp", ">11.2f"),
        ]
    columns += [
        ("peak RSS MB", "peak_rss_mb", ">11.0f"),
        ("x llama.cpp", "peak_rss_mb / llama.cpp", ">11.2f"),
        ("top-1 agree", "top1_agreement", ">11.4f"),
    ]
    text = "LLM generation (medians over runs; one process per implementation)\n"
    text += table(summary, columns)
    notes = [f"  {r.impl}: {r.note}" for r in rows if r.note]
    compiled = [f"  {r.impl} run {r.run}: {r.compile}" for r in rows if r.compile]
    if compiled:
        text += "\ncompiled rows (graphs, recompiled while timed, graph breaks):\n"
        text += "\n".join(compiled)
    if notes:
        text += "\nnot run:\n" + "\n".join(notes)
    return text
