"""A conv-BN network trained with AdamW and a one-cycle schedule on augmented MNIST batches.

Run: ``python examples/conv_bn_onecycle.py [--steps 600]`` (about 2 minutes on 2 cores). It prints
the test accuracy of the trained network on the 10,000 MNIST test images.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import convgrad as cg
from convgrad import nn
from convgrad.data import MNIST, DataLoader
from convgrad.data.transforms import Compose, RandomAffine, RandomErasing
from convgrad.optim.lr_scheduler import OneCycleLR


def build() -> nn.Module:
    """Three conv-BN-ReLU blocks with max pooling, one linear layer (17,018 parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(288, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()

    cg.manual_seed(0)
    model = build()
    decay = [p for p in model.parameters() if p.ndim > 1]  # weights decay; BN and biases do not
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    optimizer = cg.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                                {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    scheduler = OneCycleLR(optimizer, max_lr=1e-2, total_steps=args.steps)
    augment = Compose([RandomAffine(10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
                       RandomErasing(p=0.25)])
    train = MNIST("train")
    loader = DataLoader(train, args.batch_size, shuffle=True, seed=0, transform=augment)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)

    started = time.perf_counter()
    model.train()
    for _ in range(args.steps):
        images, labels = loader.next_batch()
        loss = loss_fn(model(cg.tensor(images)), labels)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=2.0)
        optimizer.step()
        scheduler.step()
    seconds = time.perf_counter() - started

    test = MNIST("test")
    model.eval()
    correct = 0
    with cg.no_grad():
        for start in range(0, len(test), 1000):
            batch = test.images[start:start + 1000, None].astype(np.float32) / np.float32(255)
            logits = model(cg.tensor(batch))
            correct += int((logits.data.argmax(1) == test.labels[start:start + 1000]).sum())
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {args.steps} steps of "
          f"{args.batch_size} in {seconds:.0f} s: test accuracy {correct / len(test):.4f}")


if __name__ == "__main__":
    main()
