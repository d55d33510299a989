"""DeepMesh (arXiv 2503.15265): compact mesh tokenization, a point-cloud-conditioned
autoregressive mesh generator, and DPO with automatic 3-D scores. See ``docs/mesh.md``.

    from tenfold.mesh import MeshTokenizer, load_mesh
    v, f = load_mesh("bunny.obj")
    tokens = MeshTokenizer().encode(v, f)       # ~3 tokens per face instead of 9
    v2, f2 = MeshTokenizer().decode(tokens)
    gen = MeshGenerator(MeshGenConfig())        # point cloud -> mesh (core LM + point prefix)
    dpo_finetune(gen, clouds, DPOConfig())      # preference pairs from automatic 3-D scores
"""

from ..core.experiment import MethodInfo
from .data import (
    MeshFileError,
    augment,
    curate,
    decimate,
    load_mesh,
    load_points,
    real_meshes,
    save_mesh,
    save_points,
    split_by_mesh,
)
from .dpo import DPOConfig, dpo_finetune, dpo_loss, make_pairs
from .model import MeshGenConfig, MeshGenerator, as_cond, load_generator, save_generator
from .points import estimate_normals, normalize_cloud, sample_surface
from .scores import WEIGHTS, MeshScore, edge_stats, score_mesh
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
    "WEIGHTS",
    "DPOConfig",
    "MeshFileError",
    "MeshGenConfig",
    "MeshGenerator",
    "MeshScore",
    "as_cond",
    "augment",
    "curate",
    "decimate",
    "dpo_finetune",
    "dpo_loss",
    "edge_stats",
    "estimate_normals",
    "load_generator",
    "load_mesh",
    "load_points",
    "make_pairs",
    "normalize_cloud",
    "real_meshes",
    "sample_surface",
    "save_generator",
    "save_mesh",
    "save_points",
    "score_mesh",
    "split_by_mesh",
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
