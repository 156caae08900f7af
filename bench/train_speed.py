"""Training speed at equal work: this project (direct and Gram paths), scikit-learn, PyTorch.

    python bench/train_speed.py                 # params.yaml's architecture, batch and epochs
    python bench/train_speed.py --repeat 5      # best of 5 runs each, interleaved
    python bench/train_speed.py --gpu           # also the CuPy backend, transfers included
    python bench/train_speed.py --gpu-only      # the GPU contenders alone
    python bench/train_speed.py --threads 1     # every contender on one BLAS/PyTorch thread
    python bench/train_speed.py --epochs 500 --no-c  # shorter; skip the C-order contender
    python bench/train_speed.py --shift 0 --no-flip  # the classic setting's 209 photos

Every contender trains [12288, *model.hidden, 1] (ReLU, sigmoid output, cross-entropy) on
the same float32 training photos for train.epochs iterations of plain gradient descent at
train.learning_rate with train.batch_size (0 = full batch), no momentum, no L2, no
per-iteration evaluation beyond the training loss each one reports anyway:

  itsacat direct   `fit(..., path="direct")`: two 12288-wide products per step over
                   every photo, copies included
  itsacat direct f the direct path as the train stage runs it when prepare.shift made
                   moved copies (`fit(..., copies=...)`, itsacat.copies): the same two
                   products, over the originals only, the moves applied to the weights;
                   absent with --shift 0 (nothing to factor)
  itsacat gram     `fit(..., path="gram")`: the exact fast path (W[0] in the span of X)
  itsacat direct C the direct path on the same photos stored pixel by pixel (C order),
                   a copy: what the train stage's photo-by-photo layout is worth
  scikit-learn     MLPClassifier(solver="sgd", momentum=0, alpha=0, batch_size=m, …)
  PyTorch (CPU)    nn.Sequential + torch.optim.SGD, same threads as numpy's BLAS

With --gpu (or --gpu-only) the same work runs on the GPU: `fit` on the CuPy backend, both
paths, and PyTorch on CUDA, each run paying its own host→device copy of the photos and
device→host copy of the weights, as the train stage does.

Each library gets the training photos in its own natural layout (this project: (12288, m)
stored photo by photo (F order), as the train stage builds it; scikit-learn and PyTorch:
(m, 12288), the same memory); building
them is not timed. Prints the wall times (best, median and spread of --repeat runs), the ratios and
the issue's goals, the BLAS kernel numpy used (threadpoolctl), the peak resident memory of
a train-stage run, and fit's own peak allocation. When OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE
are set, the timings are repeated in a subprocess without them, naming that kernel too.

Needs the `bench` extra (scikit-learn, threadpoolctl); PyTorch is optional
(`pip install torch==2.13.0`, a CPU wheel) and reported "not installed" when absent.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import itertools
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from itsacat.config import TrainParams, load_params
from itsacat.copies import Copies, find_copies
from itsacat.data import load_h5, preprocess, training_set
from itsacat.errors import ItsacatError
from itsacat.network import init_network, layer_sizes
from itsacat.stages._common import run_stage
from itsacat.training import fit

ROOT = Path(__file__).resolve().parent.parent
KERNEL_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# what this script imports from pyproject.toml's `bench` extra → the package that brings it
# (threadpoolctl first: scikit-learn imports it too, and would be blamed for its absence)
BENCH_EXTRA = {"threadpoolctl": "threadpoolctl", "sklearn.neural_network": "scikit-learn"}


@dataclasses.dataclass(frozen=True)
class Work:
    """What every contender does: the same data, layers, iterations and batch."""

    X: np.ndarray  # (n_x, m) float32, F order (photo by photo), as the train stage builds it
    XT: np.ndarray  # (m, n_x) float32, C order: scikit-learn's and PyTorch's layout
    Y: np.ndarray  # (1, m) float32
    hidden: tuple[int, ...]
    init: str  # this project's init (scikit-learn and PyTorch use their own; speed is alike)
    epochs: int
    batch: int  # photos per step (m for full batch)
    lr: float
    seed: int
    copies: Copies | None  # how the photos are moved copies (prepare.shift), if they are

    @property
    def m(self) -> int:
        return int(self.X.shape[1])


def blas_kernel() -> str:
    """numpy's BLAS as threadpoolctl sees it: library, kernel, threads."""
    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        if info.get("user_api") == "blas" and "numpy" in info.get("filepath", ""):
            return (
                f"{info.get('internal_api')} {info.get('version')}, kernel "
                f"{info.get('architecture')}, {info.get('num_threads')} threads"
            )
    return "unknown (threadpoolctl found no BLAS loaded by numpy)"


def blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), default=1)


def ours(
    work: Work, path: str, xp: Any = np, order: str = "F", factored: bool = False
) -> Callable[[], float]:
    """A run of this project's fit on `path`; returns the final training loss.

    order "C" hands fit a copy of the photos stored pixel by pixel instead of the train
    stage's photo-by-photo layout, to show what the layout alone is worth. `factored`
    tells fit the photos' copies, as the train stage does.
    """
    copies = work.copies if factored else None
    X_host = work.X if order == "F" else np.ascontiguousarray(work.X)
    params = TrainParams(
        optimizer="gd",
        l2=0.0,  # the peers' settings: no L2, every photo weighs the same
        class_weight="none",
        learning_rate=work.lr,
        epochs=work.epochs,
        batch_size=0 if work.batch == work.m else work.batch,
        log_every=work.epochs,  # only the first and last epoch are evaluated
        insight_every=0,
        seed=work.seed,
    )
    sizes = layer_sizes(work.X.shape[0], work.hidden)

    def run() -> float:
        rng = np.random.default_rng(work.seed)
        net = init_network(sizes, "relu", work.init, rng, "float32", xp)
        X, Y = xp.asarray(X_host), xp.asarray(work.Y)  # host → device on a GPU
        result = fit(net, X, Y, params, rng, path=path, copies=copies)
        if xp is not np:
            [w.get() for w in result.network.W]  # device → host, as the stage does
        return result.history[-1].train_loss

    return run


def sklearn_run(work: Work) -> Callable[[], float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    y = work.Y.ravel().astype(np.int64)

    def run() -> float:
        clf = MLPClassifier(
            hidden_layer_sizes=work.hidden,
            activation="relu",
            solver="sgd",
            alpha=0.0,
            batch_size=work.batch,
            learning_rate="constant",
            learning_rate_init=work.lr,
            max_iter=work.epochs,
            momentum=0.0,
            nesterovs_momentum=False,
            shuffle=work.batch < work.m,
            tol=0.0,
            n_iter_no_change=work.epochs + 1,  # never stops early: every iteration runs
            early_stopping=False,
            random_state=work.seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(work.XT, y)
        assert clf.n_iter_ == work.epochs, clf.n_iter_
        return float(clf.loss_)

    return run


def torch_run(work: Work, device: str = "cpu") -> Callable[[], float] | None:
    """A run of PyTorch on `device` ("cpu" or "cuda"); None where it cannot run."""
    try:
        import torch
    except ImportError:
        return None
    if device == "cuda" and not torch.cuda.is_available():
        return None
    if device == "cpu":
        torch.set_num_threads(blas_threads())
    X_host = torch.from_numpy(work.XT)
    Y_host = torch.from_numpy(np.ascontiguousarray(work.Y.T))

    def run() -> float:
        torch.manual_seed(work.seed)
        Xt, Yt = X_host.to(device), Y_host.to(device)  # host → device on a GPU
        sizes = [work.X.shape[0], *work.hidden]
        layers: list[Any] = []
        for fan_in, fan_out in itertools.pairwise(sizes):
            layers += [torch.nn.Linear(fan_in, fan_out), torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], 1)).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=work.lr, momentum=0.0)
        loss_fn = torch.nn.BCEWithLogitsLoss()
        gen = torch.Generator().manual_seed(work.seed)
        loss = torch.zeros(())
        for _ in range(work.epochs):
            order = torch.randperm(work.m, generator=gen) if work.batch < work.m else None
            for start in range(0, work.m, work.batch):
                if order is None:
                    xb, yb = Xt, Yt
                else:
                    idx = order[start : start + work.batch].to(device)
                    xb, yb = Xt[idx], Yt[idx]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
        [p.detach().cpu() for p in model.parameters()]  # device → host, as ours does
        return float(loss.item())

    return run


def timed(runs: dict[str, Callable[[], float] | None], repeat: int) -> dict[str, list[float]]:
    """Wall seconds of every contender, interleaved so background noise hits all alike."""
    times: dict[str, list[float]] = {name: [] for name, run in runs.items() if run}
    for _ in range(repeat):
        for name, run in runs.items():
            if run is None:
                continue
            start = time.perf_counter()
            loss = run()
            times[name].append(time.perf_counter() - start)
            logging.info("%s: %.3f s, final loss %.4f", name, times[name][-1], loss)
    return times


def report_times(times: dict[str, list[float]], missing: dict[str, str]) -> dict[str, float]:
    best = {name: min(t) for name, t in times.items()}
    print(f"  {'contender':18s} {'best':>8s} {'median':>8s} {'spread':>17s}  runs")
    for name, t in times.items():
        print(
            f"  {name:18s} {best[name]:7.3f}s {statistics.median(t):7.3f}s "
            f"{min(t):7.3f}–{max(t):7.3f}s  {len(t)}"
        )
    for name, why in missing.items():
        print(f"  {name:18s} {why}")
    return best


def report_goals(best: dict[str, float], photos: int) -> None:
    def ratio(slow: str, fast: str) -> float | None:
        if slow in best and fast in best:
            return best[slow] / best[fast]
        return None

    print("ratios (best times; > 1 means the second is faster)")
    for slow in ("scikit-learn", "PyTorch (CPU)"):
        for fast in ("itsacat direct", "itsacat direct f", "itsacat direct C", "itsacat gram"):
            r = ratio(slow, fast)
            if r is not None:
                print(f"  {slow} / {fast}: {r:.2f}×")
    goals = [
        ("direct path ≥ 1.2× faster than scikit-learn", "scikit-learn", "itsacat direct", 1.2),
        ("direct path ≥ 2× faster than PyTorch", "PyTorch (CPU)", "itsacat direct", 2.0),
        (
            "Gram path ≥ 15× faster than scikit-learn"
            + (
                ""
                if photos == 209
                else f" (asked of the classic 209 photos; here {photos}: its m × m "
                "products grow with m²)"
            ),
            "scikit-learn",
            "itsacat gram",
            15.0,
        ),
    ]
    if "itsacat direct f" in best:  # what the stage runs on these photos
        goals[2:2] = [
            (f"{text}, copies factored", slow, "itsacat direct f", target)
            for text, slow, _, target in goals[:2]
        ]
    print("goals (issue 6)")
    for text, slow, fast, target in goals:
        r = ratio(slow, fast)
        verdict = "not measured" if r is None else ("met" if r >= target else "NOT met")
        shown = "" if r is None else f" ({r:.2f}×)"
        print(f"  {text}: {verdict}{shown}")


def fit_peak_allocation(work: Work, path: str, factored: bool = False) -> float:
    """Peak bytes fit allocates beyond its inputs (tracemalloc sees numpy's buffers)."""
    params = TrainParams(
        optimizer="gd", learning_rate=work.lr, epochs=200, log_every=25, insight_every=100
    )
    rng = np.random.default_rng(work.seed)
    sizes = layer_sizes(work.X.shape[0], work.hidden)
    net = init_network(sizes, "relu", work.init, rng, "float32")
    from itsacat.insight import InsightRecorder

    tracemalloc.start()
    copies = work.copies if factored else None
    fit(net, work.X, work.Y, params, rng, path=path, on_insight=InsightRecorder(), copies=copies)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


def stage_peak_rss() -> tuple[float, float, float] | None:
    """Peak RSS (MiB) of `python -m itsacat.stages.train` with params.yaml, the same for a
    process that only imports what the stage imports, and the stage's wall time.

    Runs in a scratch directory (prepared/ linked in, params.yaml copied), so the project's
    own model/, insight/ and dvclive/ stay untouched.
    """
    prepared = ROOT / "prepared"
    if not (prepared / "train.npz").exists():
        return None
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child forked from this
    # (large, torch-importing) process would report the parent's peak as its own.
    code = (
        "import re, sys, time; t = time.perf_counter()\n"
        "from itsacat.stages.train import main\n"
        "rc = main()\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "print(time.perf_counter() - t, hwm)\n"
        "sys.exit(rc)\n"
    )
    with tempfile.TemporaryDirectory() as tmp:
        os.symlink(prepared, Path(tmp) / "prepared")
        shutil.copy(ROOT / "params.yaml", Path(tmp) / "params.yaml")
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp, capture_output=True, text=True, check=True
        )
        base = subprocess.run(
            [sys.executable, "-c", code.replace("rc = main()", "import dvclive; rc = 0")],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=True,
        )
    seconds, kib = out.stdout.split()[-2:]
    base_kib = base.stdout.split()[-1]
    return int(kib) / 1024, int(base_kib) / 1024, float(seconds)


def gpu_section(work: Work, repeat: int, cpu_best: dict[str, float]) -> None:
    print("GPU (host→device copy of the photos and device→host copy of the weights included)")
    try:
        import cupy

        cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no CuPy, no driver, no device: say so and go on
        print(f"  skipped: no usable CuPy GPU ({type(exc).__name__}: {exc})")
        return
    name = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    copies = []
    for _ in range(3):
        start = time.perf_counter()
        X = cupy.asarray(work.X)
        cupy.cuda.Device().synchronize()
        copies.append(time.perf_counter() - start)
        del X
    print(
        f"  device: {name}, CuPy {cupy.__version__}; X ({work.X.nbytes / 2**20:.0f} MiB) "
        f"host→device alone: {min(copies) * 1e3:.1f} ms (best of 3)"
    )
    torch = torch_run(work, "cuda")
    runs = {
        "cupy direct": ours(work, "direct", cupy),
        "cupy gram": ours(work, "gram", cupy),
        "PyTorch (CUDA)": torch,
    }
    for run in runs.values():  # warm-up: kernel compilation and cuBLAS set-up are not training
        if run is not None:
            run()
    missing = {} if torch else {"PyTorch (CUDA)": "not installed, or no CUDA device it sees"}
    best = {**cpu_best, **report_times(timed(runs, repeat), missing)}
    print("ratios (best times; > 1 means the second is faster)")
    for slow in ("PyTorch (CUDA)", *cpu_best):
        for fast in ("cupy direct", "cupy gram"):
            if slow in best:
                print(f"  {slow} / {fast}: {best[slow] / best[fast]:.2f}×")


def require_bench_extra(args: argparse.Namespace) -> None:
    """Import the `bench` extra's packages this run uses before any work or output, so a
    missing one is one line that names it, not a traceback after the header."""
    modules = {} if args.gpu_only else dict(BENCH_EXTRA)  # --gpu-only: CuPy and PyTorch alone
    if args.threads:
        modules["threadpoolctl"] = BENCH_EXTRA["threadpoolctl"]
    for module, package in modules.items():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            absent = isinstance(exc, ModuleNotFoundError) and exc.name == module.split(".")[0]
            problem = "is not installed" if absent else f"cannot be imported ({exc})"
            raise ItsacatError(
                f"{package} {problem}: run `make bench`, or pip install -e '.[bench]'"
            ) from None


def load_work(args: argparse.Namespace) -> Work:
    params = load_params(ROOT / "params.yaml")
    pp = params.prepare
    shift = pp.shift if args.shift is None else args.shift
    flip = pp.flip and not args.no_flip
    # the training photos the train stage sees (val_fraction aside)
    train, prep = training_set(
        load_h5(args.data / "train_catvnoncat.h5", "train"), pp.center, flip, shift
    )
    X = preprocess(train.images, prep, "float32")
    assert X.flags.f_contiguous, "preprocess builds X photo by photo"
    Y = train.labels.reshape(1, -1).astype(np.float32)
    tp = params.train
    epochs = args.epochs or tp.epochs
    return Work(
        X=X,
        XT=np.ascontiguousarray(X.T),
        Y=Y,
        hidden=tuple(params.model.hidden),
        init=params.model.init,
        epochs=epochs,
        batch=tp.batch_size or X.shape[1],
        lr=tp.learning_rate,
        seed=tp.seed,
        copies=find_copies(train.images),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per contender (best is kept)")
    ap.add_argument("--epochs", type=int, default=0, help="iterations (default: params.yaml)")
    ap.add_argument(
        "--shift", type=int, default=None, help="prepare.shift (default: params.yaml's)"
    )
    ap.add_argument("--gpu", action="store_true", help="also time the CuPy backend")
    ap.add_argument(
        "--gpu-only", action="store_true", help="time only the GPU contenders (CuPy, PyTorch)"
    )
    ap.add_argument(
        "--threads", type=int, default=0, help="BLAS and PyTorch threads (default: as set up)"
    )
    ap.add_argument(
        "--no-flip",
        action="store_true",
        help="no mirror images (--shift 0 --no-flip: the classic 209)",
    )
    ap.add_argument("--no-c", action="store_true", help="skip the C-order contender")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/catvnoncat")
    ap.add_argument("--timings-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("-v", "--verbose", action="store_true", help="log every run")
    args = ap.parse_args()
    if args.repeat < 1:
        ap.error(f"--repeat must be at least 1, got {args.repeat}")
    logging.getLogger().setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger("itsacat").setLevel(logging.WARNING)

    require_bench_extra(args)
    work = load_work(args)
    if args.threads:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=args.threads, user_api="blas")  # for the whole process
    env = {k: os.environ[k] for k in KERNEL_VARS if k in os.environ}
    env_text = ", ".join(f"{k}={v}" for k, v in env.items()) or "no OPENBLAS_* kernel settings"
    if not args.timings_only:
        print(
            f"work: [{work.X.shape[0]}, {', '.join(map(str, work.hidden))}, 1], "
            f"{work.m} photos, batch {work.batch}, {work.epochs} iterations of gradient "
            f"descent at lr {work.lr}, float32"
        )
    if args.gpu_only:
        gpu_section(work, args.repeat, {})
        return
    print(f"numpy BLAS: {blas_kernel()} ({env_text})")
    torch = torch_run(work)
    runs = {
        "itsacat direct": ours(work, "direct"),
        "itsacat direct f": ours(work, "direct", factored=True) if work.copies else None,
        "itsacat gram": ours(work, "gram"),
        "itsacat direct C": None if args.no_c else ours(work, "direct", order="C"),
        "scikit-learn": sklearn_run(work),
        "PyTorch (CPU)": torch,
    }
    if torch is not None:
        import torch as torch_module

        print(f"PyTorch {torch_module.__version__}, {torch_module.get_num_threads()} threads")
    times = timed(runs, args.repeat)
    best = report_times(
        times, {} if torch else {"PyTorch (CPU)": "not installed (pip install torch==2.13.0)"}
    )
    report_goals(best, work.m)
    if args.timings_only:
        return

    if env:
        print(f"\nthe same without {', '.join(env)} (a subprocess; OpenBLAS picks its kernel):")
        clean = {k: v for k, v in os.environ.items() if k not in KERNEL_VARS}
        cmd = [sys.executable, __file__, "--timings-only", "--repeat", str(args.repeat)]
        cmd += ["--epochs", str(args.epochs), "--threads", str(args.threads)]
        cmd += [] if args.shift is None else ["--shift", str(args.shift)]
        cmd += ["--no-c"] if args.no_c else []
        cmd += ["--no-flip"] if args.no_flip else []
        subprocess.run([*cmd, "--data", str(args.data)], env=clean, check=True)

    print("\nmemory")
    x_mib = work.X.nbytes / 2**20
    variants = [("direct", False), ("gram", False)]
    if work.copies:
        variants.insert(1, ("direct", True))
    for path, factored in variants:
        peak = fit_peak_allocation(work, path, factored) / 2**20
        name = f"{path} path{', copies factored' if factored else ''}"
        print(
            f"  fit's peak allocation, {name} (insight and logging on): {peak:.1f} MiB "
            f"(X itself: {x_mib:.1f} MiB, not copied)"
        )
    stage = stage_peak_rss()
    if stage is None:
        print("  train stage: skipped (run `dvc repro prepare` first)")
    else:
        rss, base, seconds = stage
        print(
            f"  train stage (python -m itsacat.stages.train, params.yaml): peak RSS "
            f"{rss:.0f} MiB ({base:.0f} MiB of it is the imports alone), "
            f"{seconds:.2f} s inside the process"
        )
    if args.gpu:
        print()
        gpu_section(work, args.repeat, best)
    print(f"\nmax RSS of this benchmark process: {_self_rss():.0f} MiB")


def _self_rss() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    raise SystemExit(run_stage(main))  # a mistake or Ctrl-C: one line, as the CLI's
