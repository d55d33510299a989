"""DeepMesh (arXiv 2503.15265): compact mesh tokenization, a point-cloud-conditioned
autoregressive mesh generator, and DPO with automatic 3-D scores. See ``docs/mesh.md``.

    from tenfold.mesh import MeshTokenizer, load_mesh
    v, f = load_mesh("bunny.obj")
    tokens = MeshTokenizer().encode(v, f)       # ~3 tokens per face instead of 9
    v2, f2 = MeshTokenizer().decode(tokens)
"""

from ..core.experiment import MethodInfo
from .tokenizer import (
    BPTTokenizer,
    DecodeReport,
    DecodeResult,
    MeshDecodeError,
    MeshGrammar,
    MeshTokenizer,
    NaiveTokenizer,
    QuantMesh,
    canonical_faces,
    normalize_vertices,
)

METHOD = MethodInfo(
    "mesh",
    "2503.15265",
    "DeepMesh",
    "compact mesh tokenization, autoregressive mesh generation, DPO",
)

__all__ = [
    "METHOD",
    "BPTTokenizer",
    "DecodeReport",
    "DecodeResult",
    "MeshDecodeError",
    "MeshGrammar",
    "MeshTokenizer",
    "NaiveTokenizer",
    "QuantMesh",
    "canonical_faces",
    "normalize_vertices",
]
