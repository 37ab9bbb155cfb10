"""LSH attention against full attention, torch SDPA and the public reformer-pytorch package.

Issue 4's benchmark. Shared-QK attention, batch 1, dim 64, bucket 64, non-causal, for
L = 1,024 ... 65,536 (and 262,144 on CUDA) and 1/2/4/8 hash rounds; forward (inference, no
autograd) and forward+backward (sum of outputs). Methods:

- ``ours``: :class:`hebb_agents.encoders.lsh.LSHAttention` (on CUDA: its fused Triton kernels);
- ``ours_torch`` (CUDA only): the same layer with ``kernel="torch"``, its PyTorch-operations path;
- ``full``: materialised ``L x L`` shared-QK attention (skipped where it would need > ~8 GiB);
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` with the same keys
  (fp32; on CUDA also ``sdpa_bf16``);
- ``reformer``: ``reformer_pytorch.LSHAttention`` at equal settings (bucket 64, same rounds,
  duplicates allowed), when the package is installed.

Memory: on CPU, every (method, L, rounds, mode) runs in a fresh Python process, so that its
memory is its own: the growth of the process's peak resident set size over its resident size
just before the call (inputs already allocated), after a warm-up call at 256 tokens that loads
the method's code (see :func:`measure_memory`). On CUDA, whose allocator counts
exactly, ``torch.cuda.max_memory_allocated`` over the allocation before the call, measured in
the timing process; a configuration that runs out of GPU memory is reported and dropped. Time:
all methods of one (L, mode) share one process and are timed in turns (ours, sdpa, ..., ours,
sdpa, ...), so that a shared machine's disturbances hit them alike; each time is the minimum
over the turns, after one warm-up. Ratios are printed against ours, measured in the same run:
``x faster`` = their time / our time (the ratio of the minima), ``turn median`` = the median over
turns of the same ratio within each turn (steadier where the machine's speed drifts between
turns: both runs of a pair see the same phase), ``mem x`` = our memory / theirs.

    python scripts/bench_lsh.py --quick          # L = 1K, 4K, 16K; 1 and 4 rounds (~4 min, 2 cores)
    python scripts/bench_lsh.py                  # the full table
    python scripts/bench_lsh.py --out results.json
    python scripts/bench_lsh.py --threads 1      # one thread each: steadier on a busy machine
    python scripts/bench_lsh.py --table-from a.json b.json   # one table from several runs
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

DIM = 64
BUCKET = 64
FULL_LIMIT_BYTES = 8 * 2**30
ROUND_METHODS = ("ours", "ours_torch", "reformer")  # methods timed at every number of rounds


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _make_call(spec: dict):
    """A no-argument function running one forward (or forward+backward) of ``spec``."""
    import torch

    from hebb_agents.encoders.lsh import LSHAttention, full_shared_qk_attention, shared_qk_sdpa

    device = torch.device(spec["device"])
    length, hashes, method, mode = spec["length"], spec["hashes"], spec["method"], spec["mode"]
    dtype = torch.bfloat16 if method == "sdpa_bf16" else torch.float32
    torch.manual_seed(0)
    qk = torch.randn(1, length, DIM, device=device, dtype=dtype)
    v = torch.randn(1, length, DIM, device=device, dtype=dtype)
    backward = mode == "fwd+bwd"
    if backward:
        qk.requires_grad_(True)
        v.requires_grad_(True)

    if method in ("ours", "ours_torch"):
        layer = LSHAttention(
            bucket_size=BUCKET, n_hashes=hashes, kernel="torch" if method == "ours_torch" else "auto"
        )

        def attend():
            return layer(qk, v)
    elif method == "reformer":
        from reformer_pytorch.reformer_pytorch import LSHAttention as PublicLSH

        public = PublicLSH(bucket_size=BUCKET, n_hashes=hashes, causal=False)

        def attend():
            return public(qk, v)[0]
    elif method == "full":

        def attend():
            return full_shared_qk_attention(qk, v)
    elif method in ("sdpa", "sdpa_bf16"):

        def attend():
            return shared_qk_sdpa(qk, v)
    else:
        raise ValueError(
            f"unknown method {method!r}; accepted: ours, ours_torch, reformer, full, sdpa, sdpa_bf16"
        )

    def call() -> None:
        if backward:
            attend().float().sum().backward()
            qk.grad = v.grad = None
        else:
            with torch.no_grad():
                attend()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return call


WARM_LENGTH = 256  # the warm-up call's length: a multiple of reformer-pytorch's 2 * bucket


def measure_memory(spec: dict) -> dict:
    """CPU: growth of peak resident memory over one call of a configuration, in a fresh process.

    A first call of the same method on ``WARM_LENGTH`` tokens loads the code it runs (shared
    libraries count in the resident set too, 5-11 MiB depending on the method), then the peak is
    reset (``/proc/self/clear_refs``) with the measured inputs already allocated. A warm-up at the
    measured length would hide the call's memory instead: the C allocator keeps what it freed.
    """
    if spec["length"] > WARM_LENGTH:
        _make_call({**spec, "length": WARM_LENGTH})()
    call = _make_call(spec)
    base = _rss_bytes()
    reset = _reset_peak_rss()
    call()
    peak = _status_bytes("VmHWM") if reset else _peak_rss_bytes()
    return {**spec, "peak_bytes": int(max(0, peak - base))}


def _reset_peak_rss() -> bool:
    """Reset the kernel's record of this process's peak resident set; False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _cuda_peak_bytes(call) -> int:
    """Peak CUDA allocation of one call beyond what was allocated before it (after a warm-up)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    call()
    return torch.cuda.max_memory_allocated() - base


def measure_times(specs: list[dict], repeats: int, budget_s: float) -> list[dict]:
    """Seconds per call of several configurations, timed in turns (ABCABC...).

    Taking turns exposes every method to the same disturbances of a shared machine; each
    configuration's time is its minimum over at least ``repeats`` runs, with more turns while
    ``budget_s`` lasts (at most 25). In each turn a configuration runs once untimed before its
    timed run: the run before it was another configuration's, whose freed memory the C allocator
    may have given back to the system, and the first run after that pays for faulting its
    memory in again (ours at 4,096 tokens, 1 hash, forward+backward: 19.5 ms without the untimed
    run, 8.1 ms with it, in two runs of the same table). On CUDA the peak memory is measured here
    too, on the call after the warm-up (one-off allocations such as library workspaces fall
    before it). A configuration that fails (out of memory, or a method failing on this device)
    is reported on stderr and left out; the others go on.
    """
    import torch

    on_cuda = bool(specs) and specs[0]["device"].startswith("cuda")
    calls = {}
    results = {}
    for index, spec in enumerate(specs):
        call = _attempt(spec, lambda spec=spec: _make_call(spec))
        if call is None:
            continue
        if _attempt(spec, call, returns=False) is None:  # warm-up
            continue
        peak = _attempt(spec, lambda call=call: _cuda_peak_bytes(call)) if on_cuda else -1
        if peak is None:
            continue
        calls[index] = call
        results[index] = {**spec, "peak_bytes": int(peak)} if on_cuda else dict(spec)
    times: dict[int, list[float]] = {index: [] for index in calls}
    deadline = time.perf_counter() + budget_s
    turns = 0
    while calls and (turns < repeats or (time.perf_counter() < deadline and turns < 25)):
        for index in list(calls):
            if _attempt(specs[index], calls[index], returns=False) is None:  # untimed: see above
                del calls[index], times[index], results[index]
                continue
            start = time.perf_counter()
            if _attempt(specs[index], calls[index], returns=False) is None:
                del calls[index], times[index], results[index]
                continue
            times[index].append(time.perf_counter() - start)
        turns += 1
    if on_cuda:
        torch.cuda.empty_cache()
    return [
        {**results[i], "seconds": min(times[i]), "runs": len(times[i]), "turn_seconds": times[i]}
        for i in sorted(times)
    ]


def _attempt(spec: dict, action, returns: bool = True):
    """``action()``'s result (True when ``returns`` is False), or None after reporting a failure."""
    try:
        value = action()
    except Exception as error:
        print(f"  dropped {spec}: {type(error).__name__}: {str(error)[:300]}", file=sys.stderr)
        return None
    return value if returns else True


def child(job: dict) -> list[dict]:
    """Run one job (memory of one configuration, or times of a group) in this process."""
    import torch

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    if job["kind"] == "memory":
        return [measure_memory(job["spec"])]
    return measure_times(job["specs"], job["repeats"], job["budget_s"])


def run_child(job: dict, timeout: float) -> list[dict]:
    """One job in a fresh subprocess; an empty list if it failed or ran out of time."""
    cmd = [sys.executable, __file__, "--child", json.dumps(job)]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        print(f"  timeout: {job}", file=sys.stderr)
        return []
    if done.returncode != 0:
        print(f"  failed: {job}\n{done.stderr[-800:]}", file=sys.stderr)
        return []
    return json.loads(done.stdout.strip().splitlines()[-1])


def has_reformer() -> bool:
    try:
        import reformer_pytorch  # noqa: F401
    except Exception:  # the package or one of its dependencies is missing
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="L = 1K, 4K, 16K; 1 and 4 rounds")
    parser.add_argument("--lengths", type=int, nargs="*", help="override the sequence lengths")
    parser.add_argument("--hashes", type=int, nargs="*", help="override the numbers of rounds")
    parser.add_argument("--modes", nargs="*", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument(
        "--repeats", type=int, default=3, help="least timed runs per configuration (min taken)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds of extra timed turns per (mode, L) group (default 20; 2 with --quick)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds before a subprocess is dropped")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch CPU threads per configuration (0: torch's default)"
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--no-reformer", action="store_true", help="skip reformer-pytorch even if installed")
    parser.add_argument("--methods", nargs="*", help="only these methods (ours, sdpa, full, reformer, ...)")
    parser.add_argument("--out", type=Path, help="write all measurements as JSON")
    parser.add_argument("--table-from", nargs="*", help="print the table of earlier --out files and exit")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    if args.table_from:
        merged = [r for path in args.table_from for r in json.loads(Path(path).read_text())]
        order = ["ours", "ours_torch", "sdpa", "full", "sdpa_bf16", "reformer"]
        present = [m for m in order if any(r["method"] == m for r in merged)]
        print_table(merged, present, sorted({r["hashes"] for r in merged if r["method"] == "ours"}))
        return

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.budget is None:
        args.budget = 2.0 if args.quick else 20.0
    if args.quick:
        lengths, hashes = [1024, 4096, 16384], [1, 4]
    else:
        lengths = [1024, 2048, 4096, 8192, 16384, 32768, 65536] + ([262144] if device == "cuda" else [])
        hashes = [1, 2, 4, 8]
    lengths, hashes = args.lengths or lengths, args.hashes or hashes
    methods = ["ours"] + (["ours_torch"] if device == "cuda" else []) + ["sdpa", "full"]
    methods += ["sdpa_bf16"] if device == "cuda" else []
    if not args.no_reformer and has_reformer():
        methods.append("reformer")
    if args.methods:
        unknown = set(args.methods) - set(methods)
        if unknown:
            raise ValueError(
                f"unknown or unavailable methods {sorted(unknown)}; accepted: {', '.join(methods)}"
            )
        methods = [m for m in methods if m in args.methods]
    threads = args.threads or torch.get_num_threads()
    print(f"device {device}, torch {torch.__version__}, CPU threads {threads}, methods {methods}")
    if "reformer" not in methods:
        print("reformer-pytorch not installed: its columns stay empty")

    results: list[dict] = []
    for length in lengths:  # in the order given: the lengths that matter most can go first
        for mode in args.modes:
            plan = []
            for method in methods:
                rounds = hashes if method in ROUND_METHODS else [0]
                for h in rounds:
                    # full attention holds ~3 L x L fp32 matrices with the backward pass
                    if (
                        method == "full"
                        and (3 if mode == "fwd+bwd" else 2) * 4 * length**2 > FULL_LIMIT_BYTES
                    ):
                        continue
                    plan.append(dict(device=device, length=length, hashes=h, method=method, mode=mode))
            memory = {}
            for spec in plan if device == "cpu" else []:  # CUDA: measured beside the times
                for r in run_child(dict(kind="memory", spec=spec, threads=args.threads), args.timeout):
                    memory[(r["method"], r["hashes"])] = r["peak_bytes"]
            timed = run_child(
                dict(
                    kind="times", specs=plan, repeats=args.repeats, budget_s=args.budget, threads=args.threads
                ),
                args.timeout,
            )
            for r in timed:
                r.setdefault("peak_bytes", memory.get((r["method"], r["hashes"]), -1))
                results.append(r)
                print(
                    f"  {mode:8s} L={length:6d} {r['method']:9s} h={r['hashes']}: "
                    f"{1e3 * r['seconds']:9.1f} ms {r['peak_bytes'] / 2**20:8.1f} MiB ({r['runs']} runs)",
                    flush=True,
                )
            if args.out:  # after every group, so that a run cut short keeps what it measured
                args.out.write_text(json.dumps(results, indent=1))
    print_table(results, methods, hashes)


def turn_median_ratio(other: dict, ours: dict) -> float | None:
    """Median over turns of ``other``'s time / ours in the same turn (None for results of an
    older run, which kept only the minima). Configurations of one group run every turn, so
    their turn lists line up."""
    pairs = [a / b for a, b in zip(other.get("turn_seconds", []), ours.get("turn_seconds", []))]
    return statistics.median(pairs) if pairs else None


def print_table(results: list[dict], methods: list[str], hashes: list[int]) -> None:
    """Markdown table: ours per (mode, L, rounds) and the ratios against every other method."""
    index = {(r["mode"], r["length"], r["method"], r["hashes"]): r for r in results}
    others = [m for m in methods if m != "ours"]
    head = ["mode", "L", "h", "ours ms", "ours MiB"]
    for m in others:
        head += [f"{m} ms", f"{m} MiB", f"vs {m}: x faster", "turn median", "mem x"]
    print("\n| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for mode in ("fwd", "fwd+bwd"):
        for length in sorted({r["length"] for r in results}):
            for h in hashes:
                ours = index.get((mode, length, "ours", h))
                if ours is None:
                    continue
                row = [
                    mode,
                    f"{length:,}",
                    str(h),
                    f"{1e3 * ours['seconds']:.1f}",
                    f"{ours['peak_bytes'] / 2**20:.0f}",
                ]
                for m in others:
                    other = index.get((mode, length, m, h if m in ROUND_METHODS else 0))
                    if other is None:
                        row += ["-"] * 5
                        continue
                    speed = other["seconds"] / ours["seconds"]
                    mem = ours["peak_bytes"] / max(other["peak_bytes"], 1)
                    paired = turn_median_ratio(other, ours)
                    row += [
                        f"{1e3 * other['seconds']:.1f}",
                        f"{other['peak_bytes'] / 2**20:.0f}",
                        f"{speed:.2f}",
                        "-" if paired is None else f"{paired:.2f}",
                        f"{mem:.2f}",
                    ]
                print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
