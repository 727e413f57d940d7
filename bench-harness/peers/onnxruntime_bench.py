#!/usr/bin/env python3
"""Peer comparison: the zoo's ONNX models on onnxruntime, one thread, on this machine.

Run it on your own machine next to `edgebench run`, so both engines see the same CPU,
load and clock:

    python3 -m venv .venv && .venv/bin/pip install onnxruntime numpy
    cargo run --release -p bench-harness --bin edgebench -- run --engine both --json ours.json
    .venv/bin/python bench-harness/peers/onnxruntime_bench.py --edgebench-json ours.json

It measures each model in models/onnx (exported by `edgebench run` or
`cargo run -p model-zoo -- export`) with intra- and inter-op threads set to 1 and
sequential execution, after warm-up runs, and prints the median latency with a 95 %
interval of the median (order statistics, no normality assumed).

It measures one model at a time, each inference right after the previous one of the
same model. `edgebench run` measures a budget's models interleaved in rounds, so each
of its inferences starts with the other models' data in the caches. For a like-for-like
latency comparison, run edgebench one model at a time too and pass every report:

    for m in fd_mobilenet_1.0 mobilenet_0.5 shufflenet_g3_1.0; do
        edgebench run --engine edge --models $m --json ours-$m.json
    done
    .venv/bin/python bench-harness/peers/onnxruntime_bench.py \
        --models fd_mobilenet_1.0,mobilenet_0.5,shufflenet_g3_1.0 \
        --edgebench-json ours-fd_mobilenet_1.0.json --edgebench-json ours-mobilenet_0.5.json \
        --edgebench-json ours-shufflenet_g3_1.0.json
 With --edgebench-json
it puts edgebench's own medians beside onnxruntime's: a markdown table of
tract / edge / onnxruntime and the edge/onnxruntime ratio (below 1: ours is faster).
Results go to --json (schema edgebench/peer-onnxruntime/v1), never overwriting a file.

On a shared or virtual machine whose speed drifts from minute to minute, medians taken
minutes apart differ by more than the runtimes do. --paired R measures each model on
both runtimes back to back, R rounds in turn (onnxruntime first in every other round),
running the edgebench binary (--edgebench, default target/release/edgebench; build it
with cargo build --release -p bench-harness) for its half of each round, and reports
the median of the R per-round ratios and their range, and the ratio of the two
runtimes' fastest runs over all rounds (the runs that other tenants of the machine
disturbed least):

    .venv/bin/python bench-harness/peers/onnxruntime_bench.py --paired 5 --min-time 1

--paired rounds last a second or more per side, and on a busy VM the speed can change
within that. --interleaved P goes finer: it keeps one `edgebench serve-runs` process
(the same binary, --edgebench) with the model loaded, and alternates --batch B of its
inferences with B of onnxruntime's, P times (onnxruntime first in every other pair), so
both sides of a pair run within a few milliseconds of each other. It reports the median
of the P per-pair ratios (each the ratio of the two batches' medians) with a 95 %
interval, the share of pairs in which edgebench was faster, and the ratio of the two
runtimes' fastest runs:

    .venv/bin/python bench-harness/peers/onnxruntime_bench.py --interleaved 200 --batch 5

With --profile N it also runs each model N more times under onnxruntime's own profiler
and prints where its time goes, per node and per operator type, to set beside
`edgebench profile <model> --engine edge --nodes`. The per-node means go into the JSON
report too (`profile` of each model).
"""

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

MODELS = [
    "fd_mobilenet_1.0", "fd_mobilenet_0.5", "fd_mobilenet_0.25",
    "mobilenet_0.5", "mobilenet_0.25", "mobilenet_0.125",
    "shufflenet_g3_1.0", "shufflenet_g3_0.5", "shufflenet_g3_0.25",
]
SCHEMA = "edgebench/peer-onnxruntime/v1"


def die(message):
    print(f"onnxruntime_bench: {message}", file=sys.stderr)
    sys.exit(2)


def median_interval(samples):
    """95 % distribution-free interval of the median from order statistics."""
    xs = sorted(samples)
    n = len(xs)
    half = 1.96 * math.sqrt(n) / 2
    lo = max(0, int(math.floor(n / 2 - half)))
    hi = min(n - 1, int(math.ceil(n / 2 + half)))
    return xs[lo], xs[hi]


def measure(session, name, feed, warmup, min_runs, min_time):
    for _ in range(warmup):
        session.run(None, feed)
    samples = []
    start = time.perf_counter()
    while len(samples) < min_runs or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        session.run(None, feed)
        samples.append((time.perf_counter() - t0) * 1e3)
    return summary(name, samples)


def summary(name, samples):
    """One model's result: the statistics of its latency samples (ms)."""
    lo, hi = median_interval(samples)
    return {
        "name": name,
        "median_ms": statistics.median(samples),
        "ci95_median_ms": [lo, hi],
        "mean_ms": statistics.fmean(samples),
        "min_ms": min(samples),
        "runs": len(samples),
        "samples_ms": samples,
    }


def profile(ort, options, path, feed, runs):
    """Mean kernel time per node over `runs` profiled inferences, from onnxruntime's trace.

    The profiler writes a Chrome-trace JSON file; its "Node" events named
    `<node>_kernel_time` carry the operator type and the duration in microseconds.
    """
    with tempfile.TemporaryDirectory(prefix="ort-profile-") as directory:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(directory, "trace")
        try:
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            for _ in range(runs):
                session.run(None, feed)
            trace = session.end_profiling()
        finally:
            options.enable_profiling = False
        with open(trace) as f:
            events = json.load(f)
    nodes = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        node = nodes.setdefault(name, {"name": name, "op": e["args"].get("op_name", "?"), "us": 0.0})
        node["us"] += e["dur"]
    for node in nodes.values():
        node["mean_ms"] = node.pop("us") / runs / 1e3
    return sorted(nodes.values(), key=lambda n: -n["mean_ms"])


def print_profile(name, nodes):
    total = sum(n["mean_ms"] for n in nodes) or 1.0
    by_op = {}
    for n in nodes:
        by_op[n["op"]] = by_op.get(n["op"], 0.0) + n["mean_ms"]
    print(f"\nonnxruntime profile of {name} (mean kernel time per inference, {total:.3f} ms in all)")
    print("| operator | ms | share |")
    print("|---|---:|---:|")
    for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1]):
        print(f"| {op} | {ms:.3f} | {100 * ms / total:.1f} % |")
    print("| node | operator | ms | share |")
    print("|---|---|---:|---:|")
    for n in nodes:
        print(f"| {n['name']} | {n['op']} | {n['mean_ms']:.4f} | {100 * n['mean_ms'] / total:.1f} % |")


def edgebench_medians(path):
    try:
        with open(path) as f:
            report = json.load(f)
    except (OSError, ValueError) as e:
        die(f"{path}: cannot read the edgebench report: {e}")
    if not str(report.get("schema", "")).startswith("edgebench/report/"):
        die(f"{path}: not an edgebench report (schema {report.get('schema')!r})")
    out = {}
    for m in report.get("models", []):
        out[(m["name"], m["engine"])] = m["stats"]["median_ms"]
    return out


def write_new(path, text):
    if os.path.exists(path):
        die(f"{path}: already exists (results are never overwritten)")
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".peer-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def edgebench_round(binary, engine, name, args):
    """One `edgebench run` of one model: (median ms, fastest run ms, the kernels' ISA) from
    its report."""
    with tempfile.TemporaryDirectory(prefix="peer-edgebench-") as directory:
        report = os.path.join(directory, "report.json")
        command = [
            binary, "run", "--engine", engine, "--models", name,
            "--model-dir", args.model_dir, "--no-export", "--no-counters", "-q",
            "--min-runs", str(args.min_runs), "--min-time", str(args.min_time),
            "--warmup-runs", str(args.warmup), "--warmup-time", "0", "--json", report,
        ]
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        except OSError as e:
            die(f"{binary}: cannot run edgebench: {e} "
                "(build it: cargo build --release -p bench-harness, or pass --edgebench)")
        if done.returncode != 0:
            die(f"{binary}: edgebench run of {name} failed (exit {done.returncode}): "
                f"{done.stderr.strip()[-2000:]}")
        with open(report) as f:
            doc = json.load(f)
    model = doc["models"][0]
    isa = next(
        (k.get("edge_isa") for k in doc["environment"].get("kernels", [])
         if k.get("engine") == engine),
        None,
    )
    return model["stats"]["median_ms"], model["stats"]["min_ms"], isa


def paired(session, name, feed, args):
    """`--paired` rounds of one model: edgebench and onnxruntime back to back."""
    rounds, samples, isa = [], [], None
    for i in range(args.paired):
        order = ["edge", "ort"] if i % 2 == 0 else ["ort", "edge"]
        round_ = {}
        for side in order:
            if side == "edge":
                round_["edgebench_ms"], round_["edgebench_min_ms"], isa = edgebench_round(
                    args.edgebench, args.paired_engine, name, args)
            else:
                r = measure(session, name, feed, args.warmup, args.min_runs, args.min_time)
                samples += r["samples_ms"]
                round_["onnxruntime_ms"] = r["median_ms"]
                round_["onnxruntime_min_ms"] = r["min_ms"]
        round_["ratio"] = round_["edgebench_ms"] / round_["onnxruntime_ms"]
        rounds.append(round_)
        print(f"{name}: round {i + 1}/{args.paired}: {args.paired_engine} {round_['edgebench_ms']:.3f} ms, "
              f"onnxruntime {round_['onnxruntime_ms']:.3f} ms, ratio {round_['ratio']:.3f}",
              file=sys.stderr)
    ratios = [r["ratio"] for r in rounds]
    # Where other tenants slow the machine by turns, a median moves with them; the
    # fastest run of each side over all rounds is the one least disturbed.
    edge_fastest = min(r["edgebench_min_ms"] for r in rounds)
    ort_fastest = min(r["onnxruntime_min_ms"] for r in rounds)
    result = summary(name, samples)
    result["paired"] = {
        "engine": args.paired_engine,
        "edge_isa": isa,
        "edgebench_median_ms": statistics.median(r["edgebench_ms"] for r in rounds),
        "onnxruntime_median_ms": statistics.median(r["onnxruntime_ms"] for r in rounds),
        "median_ratio": statistics.median(ratios),
        "min_ratio": min(ratios),
        "max_ratio": max(ratios),
        "edgebench_fastest_ms": edge_fastest,
        "onnxruntime_fastest_ms": ort_fastest,
        "fastest_ratio": edge_fastest / ort_fastest,
        "rounds": rounds,
    }
    return result


class ServeRuns:
    """An `edgebench serve-runs` process with one model loaded: `runs(n)` times n
    inferences there and returns their times in ms."""

    def __init__(self, binary, engine, name, args):
        command = [
            binary, "serve-runs", name, "--engine", engine, "--model-dir", args.model_dir,
            "--no-export", "--warmup-runs", str(args.warmup),
        ]
        self.name = name
        # Its messages go to a file: a pipe nobody reads while it runs could fill and
        # stall it.
        self.stderr = tempfile.TemporaryFile(mode="w+")
        try:
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self.stderr, text=True)
        except OSError as e:
            die(f"{binary}: cannot run edgebench: {e} "
                "(build it: cargo build --release -p bench-harness, or pass --edgebench)")
        header = self.process.stdout.readline()
        try:
            self.header = json.loads(header)
        except ValueError:
            self.fail("no header line")
        if not (isinstance(self.header, dict)
                and str(self.header.get("schema", "")).startswith("edgebench/serve-runs/")):
            self.fail(f"unexpected header {header.strip()[:200]!r}")

    def messages(self):
        self.stderr.seek(0)
        return self.stderr.read().strip()[-2000:]

    def fail(self, what):
        self.process.kill()
        self.process.communicate()
        die(f"edgebench serve-runs of {self.name} failed ({what}, exit "
            f"{self.process.returncode}): {self.messages()}")

    def runs(self, n):
        try:
            self.process.stdin.write(f"{n}\n")
            self.process.stdin.flush()
        except OSError:
            self.fail("it stopped reading")
        line = self.process.stdout.readline()
        try:
            times = [float(t) for t in line.split()]
        except ValueError:
            times = []
        if len(times) != n:
            self.fail(f"reply {line.strip()[:200]!r} to a request of {n} runs")
        return times

    def close(self):
        # Closing stdin (communicate does) ends the session.
        self.process.communicate()
        if self.process.returncode != 0:
            die(f"edgebench serve-runs of {self.name} exited with {self.process.returncode}: "
                f"{self.messages()}")


def pin_to_one_cpu(cpu):
    """Keeps this process, and the edgebench it starts, on one CPU (Linux); returns it.

    Both runtimes then take turns on the same core, at the same clock and under the
    same neighbours. Unpinned, on a 2-vCPU VM, the two processes landed on different
    vCPUs whose speeds differed from moment to moment: fd_mobilenet_1.0's median ratio
    was 0.906 in one run and 1.064 in the next (see the README)."""
    if not hasattr(os, "sched_setaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    if cpu is None:
        cpu = allowed[0]
    if cpu not in allowed:
        die(f"--cpu {cpu}: this process may only run on CPUs {allowed}")
    os.sched_setaffinity(0, {cpu})
    return cpu


def interleaved(session, name, feed, args):
    """`--interleaved` pairs of one model: batches of edgebench's and onnxruntime's
    inferences in turn."""
    edge = ServeRuns(args.edgebench, args.paired_engine, name, args)
    for _ in range(args.warmup):
        session.run(None, feed)
    pairs, edge_samples, ort_samples = [], [], []
    for i in range(args.interleaved):
        batch = {}
        for side in (["edge", "ort"] if i % 2 == 0 else ["ort", "edge"]):
            if side == "edge":
                batch["edge"] = edge.runs(args.batch)
            else:
                times = []
                for _ in range(args.batch):
                    t0 = time.perf_counter()
                    session.run(None, feed)
                    times.append((time.perf_counter() - t0) * 1e3)
                batch["ort"] = times
        edge_samples += batch["edge"]
        ort_samples += batch["ort"]
        pairs.append(statistics.median(batch["edge"]) / statistics.median(batch["ort"]))
    edge.close()
    lo, hi = median_interval(pairs)
    result = summary(name, ort_samples)
    result["interleaved"] = {
        "engine": args.paired_engine,
        "edge_isa": edge.header.get("edge_isa"),
        "cpu": args.cpu_used,
        "pairs": args.interleaved,
        "batch": args.batch,
        "edgebench_median_ms": statistics.median(edge_samples),
        "onnxruntime_median_ms": statistics.median(ort_samples),
        "median_ratio": statistics.median(pairs),
        "ci95_median_ratio": [lo, hi],
        "edgebench_faster_share": sum(r < 1 for r in pairs) / len(pairs),
        "fastest_ratio": min(edge_samples) / min(ort_samples),
        "edgebench_samples_ms": edge_samples,
        "pair_ratios": pairs,
    }
    print(f"{name}: {args.interleaved} pairs: median ratio {statistics.median(pairs):.3f} "
          f"({lo:.3f}-{hi:.3f})", file=sys.stderr)
    return result


def edgebench_side(results, mode):
    """The engine, kernel ISA and CPU of edgebench's side in `mode` ("paired" or
    "interleaved"), from the first model's result."""
    first = results[0][mode] if results else {}
    return first.get("engine", "edge"), first.get("edge_isa"), first.get("cpu")


def print_interleaved(results, pairs, batch):
    engine, isa, cpu = edgebench_side(results, "interleaved")
    print(f"Interleaved: {engine} engine" + (f" ({isa} kernels)" if isa else "")
          + f" and onnxruntime in turn" + (f" on CPU {cpu}" if cpu is not None else "")
          + f", {pairs} pairs of {batch} runs each per model")
    print(f"| model | {engine} ms | onnxruntime ms | {engine} / onnxruntime, median of the pairs "
          f"(95% CI) | pairs with {engine} faster | {engine} / onnxruntime, fastest runs |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        p = r["interleaved"]
        lo, hi = p["ci95_median_ratio"]
        print(f"| {r['name']} | {p['edgebench_median_ms']:.3f} | {p['onnxruntime_median_ms']:.3f} "
              f"| {p['median_ratio']:.3f} ({lo:.3f}-{hi:.3f}) "
              f"| {100 * p['edgebench_faster_share']:.0f} % | {p['fastest_ratio']:.3f} |")


def print_paired(results, rounds):
    engine, isa, _ = edgebench_side(results, "paired")
    print(f"Paired rounds: {engine} engine" + (f" ({isa} kernels)" if isa else "")
          + f" and onnxruntime back to back, {rounds} rounds per model")
    print(f"| model | {engine} ms | onnxruntime ms | {engine} / onnxruntime, median "
          f"| range of the {rounds} | {engine} / onnxruntime, fastest runs |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        p = r["paired"]
        print(f"| {r['name']} | {p['edgebench_median_ms']:.3f} | {p['onnxruntime_median_ms']:.3f} "
              f"| {p['median_ratio']:.2f} | {p['min_ratio']:.2f}-{p['max_ratio']:.2f} "
              f"| {p['fastest_ratio']:.2f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", default="models/onnx")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated names")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--min-runs", type=int, default=50)
    ap.add_argument("--min-time", type=float, default=3.0, help="seconds per model")
    ap.add_argument(
        "--edgebench-json",
        action="append",
        default=[],
        help="edgebench run --json report to compare with (repeatable: one per model)",
    )
    ap.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also profile N inferences per model with onnxruntime's profiler and print "
        "its time per node and per operator type",
    )
    ap.add_argument(
        "--paired",
        type=int,
        default=0,
        metavar="R",
        help="measure each model R times on edgebench and onnxruntime back to back and "
        "report the median and range of the per-round ratios",
    )
    ap.add_argument(
        "--interleaved",
        type=int,
        default=0,
        metavar="P",
        help="measure each model in P pairs of --batch runs, edgebench's and onnxruntime's "
        "in turn from one edgebench serve-runs process, and report the median of the "
        "per-pair ratios with its 95%% interval",
    )
    ap.add_argument(
        "--batch",
        type=int,
        default=5,
        metavar="B",
        help="inferences per side of each --interleaved pair [default: 5]",
    )
    ap.add_argument(
        "--cpu",
        type=int,
        metavar="N",
        help="the CPU that --interleaved runs both runtimes on [default: the first this "
        "process may use]",
    )
    ap.add_argument(
        "--edgebench",
        default=os.path.join("target", "release", "edgebench"),
        help="the edgebench binary that --paired and --interleaved run "
        "[default: target/release/edgebench]",
    )
    ap.add_argument(
        "--paired-engine",
        choices=["edge", "tract"],
        default="edge",
        help="the engine --paired and --interleaved measure on the edgebench side "
        "[default: edge]",
    )
    ap.add_argument("--json", help="write the results here (never overwritten)")
    args = ap.parse_args()
    if args.profile < 0:
        die(f"--profile {args.profile}: the number of profiled runs cannot be negative")
    if args.paired < 0:
        die(f"--paired {args.paired}: the number of rounds cannot be negative")
    if args.interleaved < 0:
        die(f"--interleaved {args.interleaved}: the number of pairs cannot be negative")
    if not 1 <= args.batch <= 10000:
        die(f"--batch {args.batch}: give 1 to 10000 runs per side of a pair")
    if args.paired and args.interleaved:
        die("--paired and --interleaved are two ways to measure the same thing: choose one")
    if (args.paired or args.interleaved) and args.edgebench_json:
        die("--paired and --interleaved measure edgebench themselves: leave out --edgebench-json")
    if (args.paired or args.interleaved) and not os.path.isfile(args.edgebench):
        die(f"{args.edgebench}: no edgebench binary "
            "(build it: cargo build --release -p bench-harness, or pass --edgebench)")

    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        die(f"{e}: pip install onnxruntime numpy")

    if args.json and os.path.exists(args.json):
        die(f"{args.json}: already exists (results are never overwritten)")
    ours = {}
    for path in args.edgebench_json:
        ours.update(edgebench_medians(path))

    args.cpu_used = pin_to_one_cpu(args.cpu) if args.interleaved else None
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL

    results = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        path = os.path.join(args.model_dir, f"{name}.onnx")
        if not os.path.isfile(path):
            die(f"{path}: no such model file (export it: cargo run -p model-zoo -- export)")
        try:
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            die(f"{path}: onnxruntime cannot load it: {e}")
        inp = session.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feed = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        if args.paired:
            r = paired(session, name, feed, args)
        elif args.interleaved:
            r = interleaved(session, name, feed, args)
        else:
            r = measure(session, name, feed, args.warmup, args.min_runs, args.min_time)
        print(f"{name}: {r['median_ms']:.3f} ms median ({r['runs']} runs)", file=sys.stderr)
        if args.profile:
            r["profile"] = profile(ort, options, path, feed, args.profile)
        results.append(r)

    if args.paired:
        print_paired(results, args.paired)
    elif args.interleaved:
        print_interleaved(results, args.interleaved, args.batch)
    else:
        print_table(results, ours)
    for r in results:
        if "profile" in r:
            print_profile(r["name"], r["profile"])

    if args.json:
        doc = {
            "schema": SCHEMA,
            "onnxruntime_version": ort.__version__,
            "threads": 1,
            "machine": platform.machine(),
            "processor": platform.processor(),
            "python": platform.python_version(),
            "models": results,
        }
        write_new(args.json, json.dumps(doc, indent=2) + "\n")


def print_table(results, ours):
    print("| model | tract ms | edge ms | onnxruntime ms (95% CI) | edge / onnxruntime |")
    print("|---|---:|---:|---:|---:|")
    for r in results:
        tract = ours.get((r["name"], "tract"))
        edge = ours.get((r["name"], "edge"))
        fmt = lambda v: "-" if v is None else f"{v:.3f}"
        ratio = "-" if edge is None else f"{edge / r['median_ms']:.2f}"
        lo, hi = r["ci95_median_ms"]
        print(f"| {r['name']} | {fmt(tract)} | {fmt(edge)} | "
              f"{r['median_ms']:.3f} ({lo:.3f}-{hi:.3f}) | {ratio} |")


if __name__ == "__main__":
    main()
