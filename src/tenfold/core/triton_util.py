"""What every method's Triton fast path shares: importing Triton lazily (``import tenfold``
never imports it), the interpreter switch and the device check with its clear error."""

from __future__ import annotations

import os

import torch
from torch import Tensor

_MODULES: tuple | None | bool = False  # False: not looked up yet


def triton_modules():
    """(triton, triton.language), or None when Triton is not installed. Memoised by hand, not
    with functools.cache, so that torch.compile traces the kernel wrappers without warnings."""
    global _MODULES
    if _MODULES is False:
        try:
            import triton
            import triton.language as tl

            _MODULES = (triton, tl)
        except ImportError:
            _MODULES = None
    return _MODULES


def interpret() -> bool:
    """True when kernels run in the Triton interpreter (``TRITON_INTERPRET=1``, on the CPU)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def available() -> bool:
    """True when Triton kernels can run: Triton imports and a GPU (or the interpreter) is there."""
    return triton_modules() is not None and (torch.cuda.is_available() or interpret())


def require(x: Tensor, package: str) -> None:
    """Raise a clear error when ``package``'s kernels cannot run on ``x``."""
    if triton_modules() is None:
        raise RuntimeError(
            f"{package} kernels need Triton (pip install triton); use "
            "backend='reference' to run the PyTorch reference instead"
        )
    if not x.is_cuda and not interpret():
        raise RuntimeError(
            f"{package} kernels run on CUDA tensors (got {x.device}); set "
            "TRITON_INTERPRET=1 before anything imports triton to run them on the CPU, or use "
            "backend='reference'"
        )


def cuda_arch(x: Tensor) -> int:
    """Compute capability of ``x``'s GPU as one number (9.0 -> 90), what the kernels' launch
    rules take; 90 under the interpreter (no GPU)."""
    if interpret() or not x.is_cuda:
        return 90
    major, minor = torch.cuda.get_device_capability(x.device)
    return 10 * major + minor


# ------------------------------------------------------------------ ahead-of-time compile
# Kernels are compiled for a GPU architecture on a machine without one (the Triton wheel
# bundles ptxas), so that a kernel that would not compile, spills registers or needs more
# shared memory than the card has is found in CI. Each method's kernels module lists what to
# compile in ``aot_specs()`` -- the constexprs and launch options its own wrappers choose --
# and ``python -m tenfold.core.triton_util <module>`` compiles them all and prints JSON (it
# must run where TRITON_INTERPRET is unset: interpreted kernels cannot be compiled).

SHARED_LIMIT = {80: 166912, 86: 101376, 89: 101376, 90: 232448}  # bytes per block (opt-in max)


def _ptxas(arch: int) -> str | None:
    """The ptxas Triton itself uses for ``arch`` (the wheel bundles one per CUDA line)."""
    if triton_modules() is None:
        return None
    try:
        from triton.backends.nvidia.compiler import get_ptxas

        try:
            tool = get_ptxas(arch)  # Triton >= 3.5: a ptxas per architecture range
        except TypeError:
            tool = get_ptxas()
        path = getattr(tool, "path", tool)
    except Exception:  # noqa: BLE001 -- no NVIDIA backend or no bundled ptxas
        return None
    return path if path and os.access(path, os.X_OK) else None


def ptxas_usage(ptx: str, arch: int) -> dict[str, int]:
    """Registers per thread and spill bytes of the kernel in ``ptx``, from ``ptxas -v``."""
    import re
    import subprocess
    import tempfile

    exe = _ptxas(arch)
    if exe is None:
        raise RuntimeError("the Triton wheel has no ptxas")
    gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        p = subprocess.run(
            [exe, "-v", f"--gpu-name={gpu}", src, "-o", os.path.join(d, "k.cubin")],
            capture_output=True,
            text=True,
            timeout=600,
        )
    if p.returncode != 0:
        raise RuntimeError(f"ptxas failed: {p.stderr.strip()[-2000:]}")
    regs = re.findall(r"Used (\d+) registers", p.stderr)
    spills = re.findall(r"(\d+) bytes spill stores, (\d+) bytes spill loads", p.stderr)
    return {
        "regs": max(map(int, regs)) if regs else 0,
        "spill_bytes": max((int(a) + int(b) for a, b in spills), default=0),
    }


def aot_compile(
    fn,
    constexprs: dict,
    types: dict[str, str],
    arch: int = 90,
    num_warps: int = 4,
    num_stages: int = 3,
    args: dict[str, int] | None = None,
) -> dict:
    """Compile the ``@triton.jit`` kernel ``fn`` for CUDA ``sm_<arch>`` without a GPU.

    ``types`` gives the type of each pointer (``"*fp16"``...) and of any non-i32 scalar;
    other runtime arguments are i32, constexprs come from ``constexprs``. ``args`` gives
    example values of runtime integers (shapes, strides of a contiguous tensor) and then the
    kernel is specialised as a launch with those values would be: a 1 becomes a constant, a
    multiple of 16 is marked divisible by 16, and every pointer is taken as 16-byte aligned
    (as PyTorch allocates). Without ``args`` nothing is specialised (the worst case: strided,
    unaligned). Returns the kernel's registers per thread, spill bytes and shared memory."""
    triton, _ = triton_modules()
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    unknown = sorted(set(args or {}) - set(fn.arg_names))
    if unknown:
        raise ValueError(f"{fn.__name__} has no arguments {unknown}")
    consts = dict(constexprs)
    sig, attrs = {}, {}
    for i, name in enumerate(fn.arg_names):
        if name in consts:
            sig[name] = "constexpr"
            continue
        kind = types.get(name, "i32")
        value = (args or {}).get(name)
        if value == 1:
            sig[name] = "constexpr"
            consts[name] = 1
            continue
        sig[name] = kind
        aligned = kind.startswith("*") or (value is not None and value % 16 == 0)
        if args is not None and aligned:
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, sig, constexprs=consts, attrs=attrs)
    k = triton.compile(
        src,
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": num_warps, "num_stages": num_stages},
    )
    use = ptxas_usage(k.asm["ptx"], arch)
    return {"shared": int(k.metadata.shared), **use}


CSV_FIELDS = ("method", "kernel", "arch", "config", "warps", "stages", "regs", "spill_bytes",
              "shared_bytes", "specialised", "triton")  # fmt: skip


def aot_run(modules: list[str], full: bool = False) -> list[dict]:
    """Compile every spec of each module's ``aot_specs(full)``; one row per kernel with the
    compile's numbers or its error (the tests assert on them)."""
    import importlib
    import time

    rows = []
    for mod in modules:
        for spec in importlib.import_module(mod).aot_specs(full=full):
            t0 = time.perf_counter()
            row = {k: v for k, v in spec.items() if k not in ("fn", "types", "args", "label")}
            row["kernel"] = spec["fn"].__name__
            row["label"] = spec.get("label") or " ".join(
                f"{k}={int(v) if isinstance(v, bool) else v}" for k, v in spec["constexprs"].items()
            )
            row["specialised"] = "args" in spec
            row["method"] = mod.split(".")[1] if mod.startswith("tenfold.") else mod
            try:
                keys = ("arch", "num_warps", "num_stages", "args")
                opts = {k: spec[k] for k in keys if k in spec}
                row.update(aot_compile(spec["fn"], spec["constexprs"], spec["types"], **opts))
                row["error"] = None
            except Exception as e:  # noqa: BLE001 -- reported per kernel, the test asserts
                row["error"] = f"{type(e).__name__}: {str(e)[-1500:]}"
            row["seconds"] = round(time.perf_counter() - t0, 2)
            rows.append(row)
    return rows


def _csv_row(r: dict, triton_version: str) -> dict:
    return {
        "method": r["method"], "kernel": r["kernel"], "arch": f"sm_{r.get('arch', 90)}",
        "config": r["label"], "warps": r.get("num_warps", 4), "stages": r.get("num_stages", 3),
        "regs": r.get("regs"), "spill_bytes": r.get("spill_bytes"),
        "shared_bytes": r.get("shared"), "specialised": int(r["specialised"]),
        "triton": triton_version,
    }  # fmt: skip


def _main(argv: list[str]) -> int:
    """``python -m tenfold.core.triton_util [--full] [--csv FILE] <module> ...``: compile,
    print the rows as JSON, and with ``--csv`` write them as ``results/gpu-readiness/aot.csv``
    is written."""
    import csv
    import json
    import sys

    if interpret():
        print("unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    args = list(argv)
    full = "--full" in args
    if full:
        args.remove("--full")
    out = None
    if "--csv" in args:
        i = args.index("--csv")
        if i + 1 >= len(args):
            print("--csv needs a file name", file=sys.stderr)
            return 2
        out = args[i + 1]
        del args[i : i + 2]
    if not args:
        print("name the kernel modules, e.g. tenfold.attention.kernels", file=sys.stderr)
        return 2
    rows = aot_run(args, full)
    print(json.dumps(rows))
    if out is not None:
        bad = [f"{r['kernel']} {r['label']}: {r['error']}" for r in rows if r["error"]]
        if bad:
            print("not written, these failed to compile:\n" + "\n".join(bad), file=sys.stderr)
            return 1
        version = triton_modules()[0].__version__
        tmp = f"{out}.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, lineterminator="\n")
            w.writeheader()
            w.writerows(_csv_row(r, version) for r in rows)
        os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
