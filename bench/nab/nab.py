#!/usr/bin/env python3
"""Scores Edgewatch's `anomaly` rule kind on the Numenta Anomaly Benchmark (NAB).

    python3 bench/nab/nab.py --nab /path/to/NAB [--edgewatch target/release/edgewatch]

What it does, end to end, with nothing of NAB's changed on disk:
  1. every NAB series (data/<category>/<file>.csv) becomes a recording, one reading per row
     on `nab/series/value`, at the row's timestamp;
  2. `edgewatch replay` runs it through the rules in bench/nab/rules/ under virtual time:
     `nab-score` reports the raw score of every reading (`report: "every"`), and
     `nab-episodes` is the rule as a user runs it, one event per episode at the default
     sensitivity;
  3. the outputs become NAB results files for two detectors:
       edgewatch           the raw score per reading, scored with NAB's threshold
                           optimisation (`--optimize`): how NAB's scoreboard was made;
       edgewatchEpisodes   1 at the reading that opened an episode, else 0, scored as
                           binary detections at threshold 0.5: what a user gets;
  4. NAB's own scorer (run.py, from a copy of the checkout's code, with the one fix current
     pandas needs) scores both for the three profiles, and the table is printed.

Needs Python 3 with NAB's requirements (pandas, numpy, scipy; see docs/benchmarks.md).
"""

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PROFILES = ["standard", "reward_low_FP_rate", "reward_low_FN_rate"]
RAW, EPISODES = "edgewatch", "edgewatchEpisodes"


def millis(ts):
    return int(datetime.strptime(ts, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc).timestamp() * 1000)


def series(nab):
    data = os.path.join(nab, "data")
    for category in sorted(os.listdir(data)):
        folder = os.path.join(data, category)
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                if name.endswith(".csv"):
                    yield category, name


def replay(edgewatch, rules, rows, work):
    """Runs one series through the rules; returns (score per row, episode start per row)."""
    rec = os.path.join(work, "rec.jsonl")
    with open(rec, "w") as f:
        for ts, value in rows:
            f.write(json.dumps({"t": millis(ts), "topic": "nab/series/value", "text": value}) + "\n")
    out = subprocess.run([edgewatch, "replay", "--rules", rules, "--events", rec],
                         capture_output=True, text=True, check=True).stdout
    scores, starts = [], set()
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        ev = json.loads(line)
        if ev.get("rule") == "nab-score":
            scores.append(float(ev["data"]["score"]))
        elif ev.get("rule") == "nab-episodes":
            starts.add(ev["t"])
        elif "fault" in ev or "late" in ev:
            sys.exit(f"replay reported {line}")
    if len(scores) != len(rows):
        sys.exit(f"{len(scores)} scores for {len(rows)} readings")
    return scores, [1.0 if millis(ts) in starts else 0.0 for ts, _ in rows]


def write_results(results, detector, category, name, rows, scores, windows):
    folder = os.path.join(results, detector, category)
    os.makedirs(folder, exist_ok=True)
    spans = [(datetime.strptime(a[:19], "%Y-%m-%d %H:%M:%S"), datetime.strptime(b[:19], "%Y-%m-%d %H:%M:%S"))
             for a, b in windows]
    with open(os.path.join(folder, f"{detector}_{name}"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["timestamp", "value", "anomaly_score", "label"])
        for (ts, value), s in zip(rows, scores):
            t = datetime.strptime(ts, "%Y-%m-%d %H:%M:%S")
            w.writerow([ts, value, s, int(any(a <= t <= b for a, b in spans))])


def nab_code(nab, work):
    """A copy of NAB's scorer, with the line current pandas rejects rewritten."""
    code = os.path.join(work, "nab-code")
    shutil.copytree(os.path.join(nab, "nab"), os.path.join(code, "nab"))
    shutil.copy(os.path.join(nab, "run.py"), code)
    labeler = os.path.join(code, "nab", "labeler.py")
    text = open(labeler).read()
    old = 'labels["label"].values[indices.values] = 1'
    if old in text:
        text = text.replace(old, 'labels.loc[labels.index[indices.values], "label"] = 1')
        open(labeler, "w").write(text)
    return code


def score(nab, code, results, thresholds, detector, optimize):
    args = [sys.executable, "run.py", "-d", detector, "--score", "--normalize", "--skipConfirmation",
            "--dataDir", os.path.join(nab, "data"), "--resultsDir", results,
            "--windowsFile", os.path.join(nab, "labels", "combined_windows.json"),
            "--profilesFile", os.path.join(nab, "config", "profiles.json"), "-t", thresholds]
    if optimize:
        args.append("--optimize")
    subprocess.run(args, cwd=code, check=True, stdout=subprocess.DEVNULL)
    with open(os.path.join(results, "final_results.json")) as f:
        return json.load(f)[detector]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nab", required=True, help="a checkout of numenta/NAB")
    p.add_argument("--edgewatch", default=os.path.join(REPO, "target", "release", "edgewatch"))
    p.add_argument("--rules", default=os.path.join(HERE, "rules"))
    p.add_argument("--out", default=os.path.join(REPO, "target", "nab"), help="results and scores go here")
    a = p.parse_args()
    if not os.path.exists(a.edgewatch):
        subprocess.run(["cargo", "build", "--release", "-p", "edgewatch"], cwd=REPO, check=True)

    shutil.rmtree(a.out, ignore_errors=True)
    results = os.path.join(a.out, "results")
    os.makedirs(results)
    shutil.copytree(os.path.join(a.nab, "results", "null"), os.path.join(results, "null"))
    windows = json.load(open(os.path.join(a.nab, "labels", "combined_windows.json")))
    with tempfile.TemporaryDirectory() as work:
        n = 0
        for category, name in series(a.nab):
            with open(os.path.join(a.nab, "data", category, name)) as f:
                rows = [(r["timestamp"], r["value"]) for r in csv.DictReader(f)]
            scores, starts = replay(a.edgewatch, a.rules, rows, work)
            spans = windows.get(f"{category}/{name}", [])
            write_results(results, RAW, category, name, rows, scores, spans)
            write_results(results, EPISODES, category, name, rows, starts, spans)
            n += len(rows)
        print(f"{n} readings in {len(list(series(a.nab)))} series")
        code = nab_code(a.nab, work)
        thresholds = os.path.join(a.out, "thresholds.json")
        with open(thresholds, "w") as f:
            json.dump({EPISODES: {p: {"threshold": 0.5, "score": 0.0} for p in PROFILES}}, f)
        raw = score(a.nab, code, results, thresholds, RAW, optimize=True)
        episodes = score(a.nab, code, results, thresholds, EPISODES, optimize=False)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    print(f"NAB scores, commit {commit.strip()}, {datetime.now(timezone.utc):%Y-%m-%d}:")
    print("| detector | standard | reward low FP | reward low FN |")
    print("|---|---:|---:|---:|")
    for label, s in (("Edgewatch anomaly, raw score, NAB-optimised threshold", raw),
                     ("Edgewatch anomaly, episodes at the default sensitivity", episodes)):
        print(f"| {label} | " + " | ".join(f"{s[p]:.1f}" for p in PROFILES) + " |")
    json.dump({"raw": raw, "episodes": episodes}, open(os.path.join(a.out, "scores.json"), "w"), indent=2)


if __name__ == "__main__":
    main()
