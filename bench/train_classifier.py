"""Train the feature classifier behind fd_<dataset> / kid_<dataset> and record it.

    python bench/train_classifier.py --dataset fashion-mnist --steps 2000 \
        --out fine/assets/classifier-fashion-mnist.safetensors

Trains on the train split, reports test accuracy, writes the weights, then records in the output
directory: the file's line in SHA256SUMS and an entry in classifiers.json (sha256, accuracy,
steps, seed, the command, and the FD/KID floors between real train and test images).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fine import data as fdata  # noqa: E402
from fine.classifier import accuracy, read_sha256sums, save_classifier, train_classifier  # noqa: E402
from fine.metrics import floor  # noqa: E402


def record(out: Path, dataset: str, entry: dict) -> None:
    """Update SHA256SUMS and classifiers.json beside `out` (other entries are kept)."""
    sums_file = out.parent / "SHA256SUMS"
    sums = read_sha256sums(sums_file) if sums_file.exists() else {}
    sums[out.name] = entry["sha256"]
    sums_file.write_text("".join(f"{h}  {name}\n" for name, h in sorted(sums.items())))
    manifest_file = out.parent / "classifiers.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.exists() else {}
    manifest[dataset] = entry
    manifest_file.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="fashion-mnist, mnist-5k, digits (no class filter)")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps (batch 128)")
    p.add_argument("--out", type=Path, required=True, help="where to write the .safetensors weights")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument(
        "--floor-n",
        type=int,
        nargs="*",
        default=[1000, 5000],
        help="sample sizes of the recorded train-vs-test floors (capped at the test size)",
    )
    p.add_argument("--no-record", action="store_true", help="do not touch SHA256SUMS / classifiers.json")
    args = p.parse_args(argv)
    if ":" in args.dataset:
        p.error("train the classifier on a whole dataset; class filters share the base classifier")
    torch.set_num_threads(args.threads)
    command = "python " + shlex.join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])

    train = fdata.load(args.dataset, "train")
    test = fdata.load(args.dataset, "test")
    print(
        f"{args.dataset}: {len(train)} train / {len(test)} test images, "
        f"{train.channels}x{train.image_size}x{train.image_size}"
    )
    bar = tqdm(total=args.steps, desc="train", unit="step", mininterval=5)

    def progress(step: int, loss: float) -> None:
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")

    t0 = time.time()
    model = train_classifier(train, args.steps, seed=args.seed, progress=progress)
    bar.close()
    seconds = time.time() - t0
    train_acc = accuracy(model, train.subset(10000, seed=0))
    test_acc = accuracy(model, test)
    print(f"trained in {seconds:.0f} s; train accuracy {train_acc:.4f}, test accuracy {test_acc:.4f}")

    sha = save_classifier(
        model, args.out, {"dataset": args.dataset, "steps": str(args.steps), "seed": str(args.seed)}
    )
    print(f"wrote {args.out}  sha256 {sha}")

    floors = {}
    for n in sorted({min(n, len(test), len(train)) for n in args.floor_n}):
        f = floor(train, test, model, n)
        floors[str(n)] = {"fd": round(f["fd"], 6), "kid": round(f["kid"], 8)}
        print(f"floor (train vs test, n={n}): fd {f['fd']:.4f}  kid {f['kid']:.6f}")

    if not args.no_record:
        record(
            args.out,
            args.dataset,
            {
                "file": args.out.name,
                "sha256": sha,
                "test_accuracy": round(test_acc, 4),
                "train_accuracy": round(train_acc, 4),
                "test_images": len(test),
                "steps": args.steps,
                "batch_size": 128,
                "seed": args.seed,
                "threads": args.threads,
                "train_seconds": round(seconds, 1),
                "torch": torch.__version__,
                "command": command,
                "floors": floors,
                "feature_dim": model.feature_dim,
            },
        )
        print(f"recorded in {args.out.parent / 'SHA256SUMS'} and {args.out.parent / 'classifiers.json'}")


if __name__ == "__main__":
    main()
