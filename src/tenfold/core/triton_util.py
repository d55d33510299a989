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
) -> dict:
    """Compile the ``@triton.jit`` kernel ``fn`` for CUDA ``sm_<arch>`` without a GPU.

    ``types`` gives the type of each pointer (``"*fp16"``...) and of any non-i32 scalar;
    other runtime arguments are i32, constexprs come from ``constexprs``. Returns the
    kernel's registers per thread, spill bytes and shared memory."""
    triton, _ = triton_modules()
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {}
    for name in fn.arg_names:
        sig[name] = "constexpr" if name in constexprs else types.get(name, "i32")
    src = ASTSource(fn, sig, constexprs=dict(constexprs))
    k = triton.compile(
        src,
        target=GPUTarget("cuda", arch, 32),
        options={"num_warps": num_warps, "num_stages": num_stages},
    )
    use = ptxas_usage(k.asm["ptx"], arch)
    return {"shared": int(k.metadata.shared), **use}


def _main(argv: list[str]) -> int:  # python -m tenfold.core.triton_util [--full] <module> ...
    import importlib
    import json
    import sys
    import time

    if interpret():
        print("unset TRITON_INTERPRET: interpreted kernels cannot be compiled", file=sys.stderr)
        return 2
    full = "--full" in argv
    out = []
    for mod in (a for a in argv if a != "--full"):
        for spec in importlib.import_module(mod).aot_specs(full=full):
            t0 = time.perf_counter()
            row = {k: v for k, v in spec.items() if k not in ("fn", "types")}
            row["kernel"] = spec["fn"].__name__
            try:
                opts = {k: spec[k] for k in ("arch", "num_warps", "num_stages") if k in spec}
                row.update(aot_compile(spec["fn"], spec["constexprs"], spec["types"], **opts))
                row["error"] = None
            except Exception as e:  # noqa: BLE001 -- reported per kernel, the test asserts
                row["error"] = f"{type(e).__name__}: {str(e)[-1500:]}"
            row["seconds"] = round(time.perf_counter() - t0, 2)
            out.append(row)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(_main(sys.argv[1:]))
