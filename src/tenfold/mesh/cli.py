"""``tenfold mesh ...``: tokenize a mesh file, sample a mesh for a point cloud.

tenfold mesh tokenize bunny.obj                 # faces, tokens, tokens/face vs naive
tenfold mesh sample --cond scan.ply -o out.obj  # normals estimated when the file has none
"""

from __future__ import annotations

import sys

import numpy as np

EXIT_USAGE = 2


def add_commands(sub, parser_class) -> None:
    """Add ``mesh`` and its subcommands to the ``tenfold`` parser."""
    m = sub.add_parser(
        "mesh", help="DeepMesh: tokenize a mesh file, sample a mesh for a point cloud"
    )
    msub = m.add_subparsers(dest="mesh_command", required=True, parser_class=parser_class)
    t = msub.add_parser("tokenize", help="tokens per face of a mesh file (OBJ/PLY/OFF/STL/glTF)")
    t.add_argument("mesh", help="mesh file")
    t.add_argument("--tokenizer", choices=("deepmesh", "bpt", "naive"), default="deepmesh")
    t.add_argument("-o", "--output", help="write the tokens here (.npy)")
    t.set_defaults(fn=cmd_tokenize)
    s = msub.add_parser("sample", help="generate a mesh conditioned on a point cloud file")
    s.add_argument("--cond", required=True, help="point cloud (PLY/XYZ/TXT/NPY/NPZ, or a mesh)")
    s.add_argument("-o", "--output", required=True, help="mesh file to write (.obj/.ply/.off)")
    s.add_argument("--weights", help="a generator checkpoint (save_generator); default: the "
                   "cached base of mesh/pretrain at --preset, trained on first use")  # fmt: skip
    s.add_argument("--preset", default="quick", help="mesh/pretrain preset of the default base")
    s.add_argument(
        "--points",
        type=int,
        default=None,
        help="points of the cloud the model sees (default: as trained, 256)",
    )
    s.add_argument("--max-new-tokens", type=int, default=None)
    s.add_argument("--temperature", type=float, default=0.8)
    s.add_argument("--top-p", type=float, default=0.95)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(fn=cmd_sample)


def _fail(msg: str) -> int:
    print(f"tenfold: error: {msg}", file=sys.stderr)
    return EXIT_USAGE


def cmd_tokenize(args) -> int:
    from . import BPTTokenizer, MeshTokenizer, NaiveTokenizer
    from .data import MeshFileError, load_mesh

    try:
        v, f = load_mesh(args.mesh)
    except MeshFileError as e:
        return _fail(str(e))
    tok = {"deepmesh": MeshTokenizer, "bpt": BPTTokenizer, "naive": NaiveTokenizer}[
        args.tokenizer
    ]()
    qm = tok.quantize(v, f)
    if len(qm.faces) == 0:
        return _fail(f"{args.mesh}: no face survives quantisation to {tok.levels} levels")
    tokens = tok.encode_quantized(qm)
    n = len(qm.faces)
    body = len(tokens) - 2
    print(f"{args.mesh}: {len(f)} faces read, {n} after clean-up (merged vertices "
          f"{qm.merged_vertices}, degenerate faces {qm.degenerate_faces}, duplicate faces "
          f"{qm.duplicate_faces})")  # fmt: skip
    print(f"{tok.name}: {body} tokens (+ BOS/EOS), {body / n:.3f} tokens/face, "
          f"{1 - body / (9 * n):.1%} fewer than 9 per face")  # fmt: skip
    if args.output:
        import io

        from ..core.io import atomic_write_bytes

        buf = io.BytesIO()
        np.save(buf, tokens)
        atomic_write_bytes(args.output, buf.getvalue())
        print(f"wrote {args.output}")
    return 0


def cmd_sample(args) -> int:
    import torch

    from ..core.io import CheckpointError
    from ..core.validate import ConfigError
    from .data import MeshFileError, load_points, save_mesh
    from .model import load_generator
    from .points import estimate_normals, normalize_cloud
    from .scores import score_mesh

    if args.points is not None and args.points < 3:
        return _fail(f"--points must be >= 3, got {args.points}")
    ext = args.output.rsplit(".", 1)[-1].lower() if "." in args.output else ""
    if ext not in ("obj", "ply", "off"):
        return _fail(f"-o {args.output}: write .obj, .ply or .off")
    try:
        pts, nrm = load_points(args.cond)
    except MeshFileError as e:
        return _fail(str(e))
    if nrm is None:
        print(f"{args.cond}: no normals in the file; estimating them (PCA of 16 neighbours)",
              file=sys.stderr)  # fmt: skip
        nrm = estimate_normals(pts)
    try:
        if args.weights:
            model = load_generator(args.weights)
            n_cond = args.points or 256
        else:
            from ..core.experiment import make_config
            from .repro.pretrain import PRETRAIN_PRESETS, PretrainConfig, pretrained_base

            if args.preset not in PRETRAIN_PRESETS:
                return _fail(f"--preset {args.preset!r}: choose {', '.join(PRETRAIN_PRESETS)}")
            pcfg = make_config(PretrainConfig, PRETRAIN_PRESETS[args.preset], where="mesh sample")
            model, _, _ = pretrained_base(pcfg, progress=not args.quiet)
            n_cond = args.points or pcfg.cond_points
    except (CheckpointError, ConfigError) as e:
        return _fail(str(e))
    p, centre, scale = normalize_cloud(pts)
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(p), size=min(n_cond, len(p)), replace=False)
    cond = torch.from_numpy(np.concatenate([p[idx], nrm[idx]], 1)).float()[None]  # (1, N, 6)
    budget = args.max_new_tokens or model.config.window
    try:
        out = model.sample(cond, max_new_tokens=budget, temperature=args.temperature,
                           top_p=args.top_p, generator=torch.Generator().manual_seed(args.seed),
                           progress=not args.quiet)[0]  # fmt: skip
    except ValueError as e:
        return _fail(str(e))
    s = score_mesh(out.vertices, out.faces, p, nrm)
    v = out.vertices / scale + centre  # back to the cloud's frame
    save_mesh(args.output, v, out.faces)
    print(f"{args.output}: {len(out.faces)} faces, {len(out.tokens)} tokens, "
          f"{'complete' if out.report.valid else 'closed early: ' + (out.report.reason or 'budget')}; "
          f"Chamfer to the cloud {s.chamfer:.4f} (normalised frame), holes "
          f"{s.boundary_fraction:.2f} of edges")  # fmt: skip
    return 0
