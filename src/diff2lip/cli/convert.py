"""``diff2lip convert OFFICIAL.pt OUT_DIR``: the authors' checkpoint → ``config.json`` + ``model.safetensors``."""

from __future__ import annotations

import argparse
from pathlib import Path

ORDER = 80

OFFICIAL_CHECKPOINT_URL = "https://drive.google.com/drive/folders/1UMiHAhVf5M_CKzjVQFC5jkz-IXAAnFo5"

EPILOG = f"""\
Where to get the official checkpoint:
  The authors of Diff2Lip (github.com/soumik-kanad/diff2lip) link it from their README's
  "Inference" section, a Google Drive folder:
    {OFFICIAL_CHECKPOINT_URL}
  The file is e7.24.1.3_model260000_paper.pt (a plain fp32 state_dict, ~400 MB; licence CC BY-NC 4.0).
  diff2lip never downloads it: fetch it yourself, then run this command once.

What it does:
  Reads the file with torch.load(weights_only=True) (a pickle carrying code is refused), checks
  every one of its 632 tensors against the paper model (src/diff2lip/configs/paper.yaml), and writes OUT_DIR/config.json
  (model, diffusion and sampling sections of the paper preset) and OUT_DIR/model.safetensors.
  Nothing is written if any check fails. `diff2lip generate --checkpoint` accepts either form.

Examples:
  diff2lip convert checkpoints/e7.24.1.3_model260000_paper.pt models/diff2lip-paper
  diff2lip convert e7.24.1.3_model260000_paper.pt models/diff2lip-paper-fp16 --dtype fp16
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="convert the authors' released checkpoint to config.json + model.safetensors",
        description=(
            "Convert the official Diff2Lip checkpoint (a PyTorch .pt state_dict) into this package's "
            "format: a directory with config.json and model.safetensors that loads strictly."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="OFFICIAL.pt", help="the authors' checkpoint file")
    p.add_argument("out_dir", metavar="OUT_DIR", help="directory to write (created if missing)")
    p.add_argument(
        "--dtype",
        choices=["fp32", "fp16"],
        default="fp32",
        help="precision of the stored weights (default fp32, as released; fp16 halves the size)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace config.json / model.safetensors if OUT_DIR already holds a model",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from diff2lip.errors import Diff2LipError
    from diff2lip.models.serialization import CONFIG_NAME, WEIGHTS_NAME, convert_official

    out = Path(args.out_dir)
    existing = [n for n in (CONFIG_NAME, WEIGHTS_NAME) if (out / n).exists()]
    if existing and not args.overwrite:
        raise Diff2LipError(f"already holds {', '.join(existing)}; pass --overwrite to replace", out)
    convert_official(args.checkpoint, out, dtype=args.dtype)
    summary = describe_saved(out)
    print(
        f"wrote {out / WEIGHTS_NAME} ({summary['size_mib']:.1f} MiB: {summary['tensors']} tensors, "
        f"{summary['parameters']:,} parameters, {args.dtype})"
    )
    print(f"wrote {out / CONFIG_NAME} (model, diffusion and sampling sections of the paper preset)")
    return 0


def describe_saved(directory: str | Path) -> dict[str, float | int]:
    """Tensor count, parameter count and size of a saved ``model.safetensors`` (header only)."""
    import math

    from safetensors import safe_open

    from diff2lip.models.serialization import WEIGHTS_NAME

    path = Path(directory) / WEIGHTS_NAME
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        params = sum(math.prod(f.get_slice(k).get_shape()) for k in keys)
    return {"tensors": len(keys), "parameters": params, "size_mib": path.stat().st_size / 2**20}
