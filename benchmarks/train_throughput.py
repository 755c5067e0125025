"""Generator-stage training throughput: fastai Learner vs a bare PyTorch loop over the same model and batches.

    python benchmarks/train_throughput.py                 # 128 px, batch 8, CPU (and CUDA when present)
    python benchmarks/train_throughput.py --batches 20 --encoder resnet18

Prints images/s for each and the ratio Learner / bare (target: >= 0.9). Data is made once in memory so
only training is timed (data loading and degradation are benchmarked elsewhere); the first `--warmup`
batches of each run are not timed. "Learner" is what `train_generator` runs (fastai's Adam); "Learner +
torch Adam" swaps in torch's fused-loop Adam through fastai's OptimWrapper to separate optimizer cost from
Learner overhead.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback  # noqa: F401 (adds Learner.no_bar)
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.losses import MSELossFlat
from fastai.optimizer import Adam, OptimWrapper
from torch.utils.data import DataLoader as TorchDataLoader
from torch.utils.data import TensorDataset

from restore.arch import GeneratorSpec, generator_learner


class _Timer(Callback):
    order = 100

    def __init__(self, warmup: int):
        self.warmup, self.times = warmup, []

    def after_batch(self):
        if self.training:
            if self.learn.device_type == "cuda":
                torch.cuda.synchronize()
            self.times.append(time.perf_counter())


def _dataset(n: int, size: int) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, size, size, generator=generator) * 2 - 1
    return TensorDataset(x, (x * 0.8).clamp(-1, 1))


def _images_per_second(times: list[float], warmup: int, bs: int) -> float:
    timed = times[warmup:]
    return bs * (len(timed) - 1) / (timed[-1] - timed[0])


def bench_learner(dataset, spec, bs, device, warmup, torch_adam: bool) -> float:
    loader = DataLoader(dataset, bs=bs, shuffle=True, drop_last=True, device=device)
    dls = DataLoaders(loader, DataLoader(dataset, bs=bs, device=device), device=device)
    opt_func = partial(OptimWrapper, opt=torch.optim.Adam) if torch_adam else Adam
    torch.manual_seed(0)
    learn = generator_learner(dls, spec, loss_func=MSELossFlat(), opt_func=opt_func, wd=0.0)
    timer = _Timer(warmup)
    learn.device_type = torch.device(device).type
    with learn.no_bar(), learn.no_logging():
        # validation is skipped: the bare loop has none
        learn.fit(1, 1e-3, cbs=[timer, _SkipValidation()])
    return _images_per_second(timer.times, warmup, bs)


class _SkipValidation(Callback):
    def before_validate(self):
        from fastai.callback.core import CancelValidException

        raise CancelValidException()


def bench_bare(dataset, spec, bs, device, warmup) -> float:
    loader = TorchDataLoader(dataset, batch_size=bs, shuffle=True, drop_last=True)
    torch.manual_seed(0)
    # the very same network the Learner trains (unet_learner's DynamicUnet)
    dummy = DataLoaders(DataLoader(dataset, bs=bs, device=device), DataLoader(dataset, bs=bs, device=device),
                        device=device)
    model = generator_learner(dummy, spec, loss_func=MSELossFlat()).model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_func = torch.nn.MSELoss()
    times = []
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        loss = loss_func(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter())
    return _images_per_second(times, warmup, bs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per run (plus warmup)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--no-attention", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = GeneratorSpec(encoder=args.encoder, self_attention=not args.no_attention)
    dataset = _dataset(args.bs * (args.batches + args.warmup + 1), args.size)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"generator {spec.encoder} attention={spec.self_attention}, {args.size} px, batch {args.bs}, "
          f"{args.batches} timed batches, torch threads {torch.get_num_threads()}")
    for device in devices:
        bare = bench_bare(dataset, spec, args.bs, device, args.warmup)
        learner = bench_learner(dataset, spec, args.bs, device, args.warmup, torch_adam=False)
        learner_torch = bench_learner(dataset, spec, args.bs, device, args.warmup, torch_adam=True)
        print(f"{device.type:5s} bare loop            {bare:8.2f} images/s")
        print(f"{device.type:5s} Learner (fastai Adam) {learner:8.2f} images/s  ratio {learner / bare:.2f}")
        print(f"{device.type:5s} Learner + torch Adam  {learner_torch:8.2f} images/s  ratio {learner_torch / bare:.2f}")


if __name__ == "__main__":
    main()
