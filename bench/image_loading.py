"""GOAT eval image loading: decoding in the scoring loop vs decoding ahead in threads
(`image_workers`), with the model's forward simulated as a wait during which the CPU is free,
as it is while a GPU computes. Real-size memes: 640x480 JPEGs (quality 90).

    python bench/image_loading.py [--memes 160] [--batch 16] [--forward-ms 40]

`--forward-ms`: time of one batch's forward on the GPU (a 7B model's batch of 16 memes of ~650
tokens is roughly 15-60 ms on current cards); the bench waits that long per batch.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import save  # noqa: E402
from goat_bench.data import load_task, with_images  # noqa: E402
from mmsafety.synthetic import memes  # noqa: E402


def write_dataset(root: Path, n: int) -> None:
    folder = root / "sarcasm" / "img"
    folder.mkdir(parents=True)
    lines = []
    for i, meme in enumerate(memes.memes("sarcasm", "heldout", n, seed=5)):
        meme.image.resize((640, 480)).save(folder / f"{i}.jpg", quality=90)
        lines.append(json.dumps({"id": i, "img": f"img/{i}.jpg", "text": meme.text, "label": meme.labels["sarcasm"]}))
    (root / "sarcasm" / "test.jsonl").write_text("\n".join(lines) + "\n")


def run(root: Path, workers: int, batch: int, forward_s: float) -> float:
    """Seconds for the whole loop: images in order, one simulated forward per full batch."""
    start, pending = time.perf_counter(), 0
    for _, image in with_images(load_task(root, "sarcasm"), workers=workers):
        pending += image is not None
        if pending == batch:
            time.sleep(forward_s)
            pending = 0
    if pending:
        time.sleep(forward_s)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memes", type=int, default=160)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--forward-ms", type=float, default=40.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_dataset(root, args.memes)
        configs = {"decode only, in the loop": (0, 0.0), "in the loop": (0, args.forward_ms / 1000),
                   "2 threads ahead": (2, args.forward_ms / 1000), "4 threads ahead": (4, args.forward_ms / 1000)}
        times: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.rounds):  # alternating, so drift hits all alike
            for name, (workers, forward_s) in configs.items():
                times[name].append(run(root, workers, args.batch, forward_s))
    rates = {name: args.memes / sorted(ts)[len(ts) // 2] for name, ts in times.items()}
    ideal = args.memes / (-(-args.memes // args.batch) * args.forward_ms / 1000)
    print(f"{args.memes} memes of 640x480 JPEG, batches of {args.batch}, a simulated {args.forward_ms:.0f} ms "
          f"forward per batch (the forward alone allows {ideal:.0f} memes/s); median of {args.rounds}")
    for name, rate in rates.items():
        print(f"  {name:26} {rate:7.1f} memes/s  ({rate / rates['in the loop']:.2f}x in the loop)")
    path = save("image_loading", {"memes": args.memes, "batch": args.batch, "forward_ms": args.forward_ms,
                                  "memes_per_s": rates, "forward_bound_memes_per_s": ideal})
    print(f"appended to {path}")


if __name__ == "__main__":
    main()
