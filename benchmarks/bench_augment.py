"""Cost of batch augmentation against one training step of the Deep MNIST network.

The bar: augmenting a batch of 256 MNIST images must take less than 10% of one baseline
(Deep MNIST, Adam) training step at batch 256. Training steps and augmentations alternate in one
process (so both see the same machine state); the script prints the median of each and the ratio,
for the recipe ``RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1))`` + ``RandomErasing()``
and for each transform alone. Augmentation runs in NumPy on one thread, the training step with
convgrad's threads.

Usage:
    python benchmarks/bench_augment.py [--steps 10] [--threads N] [--synthetic]

Uses the MNIST training images from the cache (or the data layer's sources); ``--synthetic``
uses uniform noise instead (the cost does not depend on the pixel values).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

import convgrad as cg
from convgrad.data.transforms import Compose, RandomAffine, RandomCrop, RandomErasing
from convgrad.lab.models import deep_mnist

BATCH = 256


def training_step():
    """One Adam step of the Deep MNIST network (TF tutorial init), as ``step(images, labels)``."""
    cg.manual_seed(0)
    model = deep_mnist()
    cg.nn.init.tf_tutorial_init_(model)
    model.train()
    optimizer = cg.optim.Adam(model.parameters(), lr=1e-4)

    def step(images: np.ndarray, labels: np.ndarray) -> float:
        optimizer.zero_grad()
        loss = cg.nn.functional.cross_entropy(model(cg.tensor(images)), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def mnist_images(synthetic: bool, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, 1, 28, 28) float32 in [0, 1] and (count,) int64 labels."""
    rng = np.random.default_rng(0)
    if synthetic:
        return rng.random((count, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, count)
    from convgrad.data import MNIST

    train = MNIST("train")
    pick = rng.choice(len(train.labels), count, replace=False)
    images = train.images[pick].astype(np.float32)[:, None] / np.float32(255)
    return images, np.asarray(train.labels)[pick].astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps (>= 10)")
    parser.add_argument("--threads", type=int, default=None, help="convgrad threads")
    parser.add_argument("--synthetic", action="store_true", help="noise instead of MNIST")
    args = parser.parse_args()
    if args.threads is not None:
        cg.set_num_threads(args.threads)
    recipe = Compose([RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1)), RandomErasing()])
    parts = {
        "RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1))": recipe.transforms[0],
        "RandomErasing()": recipe.transforms[1],
        "RandomCrop(28, padding=2)": RandomCrop(28, padding=2),
    }
    images, labels = mnist_images(args.synthetic, BATCH * 4)
    batches = [(images[k * BATCH : (k + 1) * BATCH], labels[k * BATCH : (k + 1) * BATCH])
               for k in range(4)]
    step = training_step()
    rng = np.random.default_rng(0)

    def timed(function, *arguments) -> float:
        start = time.perf_counter()
        function(*arguments)
        return time.perf_counter() - start

    for x, y in batches[:2]:  # warm-up: workspaces, BLAS, caches
        step(x, y)
        recipe(x, rng)
    step_times, recipe_times = [], []
    part_times: dict[str, list[float]] = {name: [] for name in parts}
    for k in range(max(10, args.steps)):
        x, y = batches[k % len(batches)]
        step_times.append(timed(step, x, y))
        recipe_times.append(timed(recipe, x, rng))
        for name, transform in parts.items():
            part_times[name].append(timed(transform, x, rng))
    step_median = statistics.median(step_times)
    recipe_median = statistics.median(recipe_times)
    print(f"threads: convgrad {cg.get_num_threads()}; data: "
          f"{'synthetic' if args.synthetic else 'MNIST train'}; {len(step_times)} interleaved "
          f"rounds, medians")
    print(f"training step (Deep MNIST, Adam, batch {BATCH}): {step_median * 1e3:.1f} ms")
    for name, times in part_times.items():
        median = statistics.median(times)
        print(f"  {name}: {median * 1e3:.2f} ms ({median / step_median:.3f} of a step)")
    print(f"augmentation (RandomAffine + RandomErasing, batch {BATCH}): "
          f"{recipe_median * 1e3:.2f} ms")
    print(f"augmentation / training step = {recipe_median / step_median:.3f}")


if __name__ == "__main__":
    main()
