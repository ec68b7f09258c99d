#!/usr/bin/env python3
"""kill -9 at random moments of mpq's writing commands, and what each trial leaves.

For each command, a complete output exists first (the "old" set); the command is then rerun
into it (with other settings, so the "new" set differs) and killed with SIGKILL at a random
moment of its run (uniform over its measured duration). After every kill the outputs must be
the old complete set or the new complete set, never a mix, a truncated file or a temp file.
HAQ is also resumed after every kill and must end with the plan of an uninterrupted run.

    python3 bench/hardening/kill_trials.py [--mpq target/release/mpq] [--trials 20] [--seed 0]

Prints one line per command: trials, how many left the old set, the new set, and failures
(must be 0). Exit status 1 on any failure.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def run(mpq, args, cwd):
    r = subprocess.run([mpq, "--quiet", *args], cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"mpq {' '.join(args)} failed: {r.stderr}")
    return r


def timed(mpq, args, cwd):
    t0 = time.monotonic()
    run(mpq, args, cwd)
    return time.monotonic() - t0


def kill_at(mpq, args, cwd, seconds):
    p = subprocess.Popen([mpq, "--quiet", *args], cwd=cwd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        p.wait(timeout=seconds)
        return False  # finished before the kill
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return True


def stray_temps(folder):
    """Temp files or staging folders of a live writer (a killed one's are cleaned up next
    time; they are hidden and never read, but are counted here)."""
    return [n for n in os.listdir(folder) if n.startswith(".")]


def json_without(path, keys):
    with open(path) as f:
        v = json.load(f)
    for k in keys:
        v.pop(k, None)
    return v


class Tally:
    def __init__(self, name):
        self.name, self.old, self.new, self.fail, self.finished, self.notes = name, 0, 0, 0, 0, []

    def add(self, verdict, note=""):
        setattr(self, verdict, getattr(self, verdict) + 1)
        if verdict == "fail":
            self.notes.append(note)

    def line(self):
        n = self.old + self.new + self.fail
        return (f"{self.name:<28} trials {n:>3}  old set {self.old:>3}  new set {self.new:>3}  "
                f"(finished before the kill {self.finished:>2})  failures {self.fail}")


def quantize_trials(mpq, work, trials, rng):
    t = Tally("quantize (rerun into DIR)")
    files = ["model.safetensors", "model.onnx", "plan.json"]
    ref = {}
    for name, policy in [("old", "a.json"), ("new", "b.json")]:
        d = os.path.join(work, f"ref-{name}")
        run(mpq, ["quantize", "--model", "m.safetensors", "--policy", policy,
                  "--data", "mnist10k", "--finetune-epochs", "1", "--out", d], work)
        ref[name] = {f: sha(os.path.join(d, f)) for f in files}
    args_new = ["quantize", "--model", "m.safetensors", "--policy", "b.json", "--data",
                "mnist10k", "--finetune-epochs", "1", "--out", "q"]
    duration = timed(mpq, args_new, work)
    for _ in range(trials):
        shutil.rmtree(os.path.join(work, "q"), ignore_errors=True)
        shutil.copytree(os.path.join(work, "ref-old"), os.path.join(work, "q"))
        if not kill_at(mpq, args_new, work, rng.uniform(0, duration)):
            t.finished += 1
        q = os.path.join(work, "q")
        have = {f: sha(os.path.join(q, f)) if os.path.exists(os.path.join(q, f)) else None
                for f in files}
        verdict = next((n for n in ("old", "new") if have == ref[n]), None)
        try:
            summary = json_without(os.path.join(q, "summary.json"), [])
            with open(os.path.join(q, "plan.json")) as f:
                plan = json.load(f)
            consistent = summary["method"] == plan["method"]
        except (OSError, ValueError, KeyError):
            consistent = False
        if verdict and consistent:
            t.add(verdict)
        else:
            t.add("fail", f"quantize left {have}")
    return t


def analyze_trials(mpq, work, trials, rng):
    t = Tally("analyze (rerun into S.json)")
    base = ["analyze", "--model", "m.safetensors", "--data", "mnist10k", "--batches", "2",
            "--max-iter", "20"]
    run(mpq, [*base, "--seed", "1", "--out", "ref-old.json"], work)
    run(mpq, [*base, "--seed", "2", "--out", "ref-new.json"], work)
    ref = {n: json_without(os.path.join(work, f"ref-{n}.json"), ["seconds"])
           for n in ("old", "new")}
    args_new = [*base, "--seed", "2", "--out", "s.json"]
    duration = timed(mpq, args_new, work)
    for _ in range(trials):
        shutil.copy(os.path.join(work, "ref-old.json"), os.path.join(work, "s.json"))
        if os.path.exists(os.path.join(work, "ref-old.svg")):
            shutil.copy(os.path.join(work, "ref-old.svg"), os.path.join(work, "s.svg"))
        if not kill_at(mpq, args_new, work, rng.uniform(0, duration)):
            t.finished += 1
        try:
            got = json_without(os.path.join(work, "s.json"), ["seconds"])
        except (OSError, ValueError) as e:
            t.add("fail", f"analyze: s.json unreadable: {e}")
            continue
        verdict = next((n for n in ("old", "new") if got == ref[n]), None)
        t.add(verdict or "fail", "analyze left a table that is neither")
    return t


def train_trials(mpq, work, trials, rng):
    t = Tally("train --out (rerun)")
    base = ["train", "--arch", "lenet5", "--data", "mnist10k", "--epochs", "1"]
    run(mpq, [*base, "--seed", "1", "--out", "ref-old.safetensors"], work)
    run(mpq, [*base, "--seed", "2", "--out", "ref-new.safetensors"], work)
    # The weights are seeded; the metadata records timings, so compare what `eval` reads.
    def weights(path):
        r = subprocess.run([mpq, "--quiet", "eval", "--model", path, "--data", "mnist10k",
                            "--json"], cwd=work, capture_output=True, text=True)
        if r.returncode != 0:
            return None
        v = json.loads(r.stdout)
        return (v["accuracy"], v["loss"])
    ref = {n: weights(f"ref-{n}.safetensors") for n in ("old", "new")}
    assert ref["old"] != ref["new"], "seeds 1 and 2 train the same model"
    args_new = [*base, "--seed", "2", "--out", "t.safetensors"]
    duration = timed(mpq, args_new, work)
    for _ in range(trials):
        shutil.copy(os.path.join(work, "ref-old.safetensors"), os.path.join(work, "t.safetensors"))
        if not kill_at(mpq, args_new, work, rng.uniform(0, duration)):
            t.finished += 1
        got = weights("t.safetensors")
        verdict = next((n for n in ("old", "new") if got == ref[n]), None)
        t.add(verdict or "fail", f"train left a model that evaluates to {got}")
    return t


def haq_trials(mpq, work, trials, rng):
    t = Tally("search --method haq")
    r = Tally("  --resume after the kill")
    base = ["search", "--model", "m.safetensors", "--data", "mnist10k", "--method", "haq",
            "--avg-bits", "3", "--episodes", "24", "--warmup", "6", "--val-samples", "500",
            "--calib-samples", "128"]
    run(mpq, [*base, "--out", "ref.json"], work)
    with open(os.path.join(work, "ref.json")) as f:
        reference = json.load(f)
    duration = timed(mpq, [*base, "--out", "ref2.json"], work)
    for _ in range(trials):
        for side in ("h.json", "h.haq-state.json", "h.curve.svg"):
            if os.path.exists(os.path.join(work, side)):
                os.remove(os.path.join(work, side))
        if not kill_at(mpq, [*base, "--out", "h.json"], work, rng.uniform(0, duration)):
            t.finished += 1
        # The policy is absent (no earlier run) or complete; the state, if any, is complete.
        ok = True
        for f in ("h.json", "h.haq-state.json"):
            p = os.path.join(work, f)
            if os.path.exists(p):
                try:
                    with open(p) as fh:
                        json.load(fh)
                except ValueError:
                    ok = False
        policy_written = os.path.exists(os.path.join(work, "h.json"))
        t.add(("new" if policy_written else "old") if ok else "fail", "haq left a broken file")
        run(mpq, [*base, "--out", "h.json", "--resume"], work)
        with open(os.path.join(work, "h.json")) as f:
            resumed = json.load(f)
        same = (resumed["layers"] == reference["layers"]
                and resumed["haq"]["history"] == reference["haq"]["history"])
        r.add("new" if same else "fail", "a resumed search ended elsewhere")
    return [t, r]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mpq", default="target/release/mpq")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    mpq = os.path.abspath(a.mpq)
    rng = random.Random(a.seed)
    work = tempfile.mkdtemp(prefix="mpq-kill-")
    run(mpq, ["train", "--arch", "lenet5", "--data", "mnist10k", "--epochs", "1",
              "--out", "m.safetensors"], work)
    run(mpq, ["search", "--model", "m.safetensors", "--method", "uniform", "--avg-bits", "4",
              "--out", "a.json"], work)
    run(mpq, ["search", "--model", "m.safetensors", "--method", "uniform", "--avg-bits", "8",
              "--out", "b.json"], work)
    tallies = []
    for trial in (quantize_trials, analyze_trials, train_trials, haq_trials):
        got = trial(mpq, work, a.trials, rng)
        for t in got if isinstance(got, list) else [got]:
            tallies.append(t)
            print(t.line(), flush=True)
            for n in t.notes[:5]:
                print("    " + n, flush=True)
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if any(t.fail for t in tallies) else 0)


if __name__ == "__main__":
    main()
