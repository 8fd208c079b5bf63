"""`nas export`: a trained network to ONNX or TorchScript, verified against torch as it is written."""

from __future__ import annotations

import argparse

EPILOG = """\
examples:
  nas export runs/digits-train --format onnx --out digits.onnx
  nas export runs/digits-train/final.pt --format torchscript --out digits.pt
  nas export runs/photos-m --format onnx --out m.onnx --data imagefolder:/new/place/photos

PATH is a training run's folder (nas train --out), its final.pt, or a spec without weights (a spec JSON, a
search's best.json or run directory: the network freshly initialised). The exported model takes float32 images
[batch, C, S, S] with values in [0, 1] (S: the run's eval image size, C: its channels; the batch axis is
dynamic) and returns logits [batch, classes]. The input normalisation (the training split's per-channel mean and
std) is built into the graph, so resize and scale the pixels to [0, 1] and nothing more; it is also recorded in
the file's metadata (ONNX metadata_props, a TorchScript archive's extra/effnas.json) with the image size,
channels, classes and spec.

Every export is checked before it is written: the file, run through onnxruntime (ONNX) or loaded back with
torch.jit.load (TorchScript), must give torch's logits within 1e-4 on a batch of real images of the run's data
(deterministic random images when there is none), at another batch size than the one traced; a mismatch is an
error and writes nothing. ONNX needs the export extra: pip install 'effnas[export]'. --out is never a study or
a file effnas did not write; a re-export replaces its own file.
"""


FORMATS = ("onnx", "torchscript")  # effnas.exporting.FORMATS, named here so that `nas --help` loads no torch


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="export a trained network to ONNX or TorchScript (checked against torch)",
        description="Export a trained network, its input normalisation built in, to ONNX or TorchScript.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", metavar="PATH", help="a training run's folder or final.pt, or a spec without weights")
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx | torchscript")
    parser.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    parser.add_argument("--data", default=None, metavar="SOURCE",
                        help="where the training data is now, if it has moved since training (its statistics are "
                             "the input normalisation; default: the source the run recorded)")
    parser.add_argument("--force", action="store_true",
                        help="replace a file effnas wrote for another purpose (a spec, a report) at --out")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from effnas.exporting import export

    result = export(args.path, format=args.format, out=args.out, force=args.force, data=args.data)
    meta = result.metadata
    print(f"wrote {result.out}: {result.format}, float32 images [batch, {meta['channels']}, {meta['image_size']}, "
          f"{meta['image_size']}] in [0, 1] -> logits [batch, {meta['num_classes']}], normalisation in the graph")
    print(f"checked on {result.checked_on}: largest difference from torch {result.max_difference:.2g}")
    if not meta["trained"]:
        print("note: a spec without weights; the network is freshly initialised")
    return 0
