#!/usr/bin/env bash
# evaluate's time with this tree's code against an older tree's, on a project that `dvc repro`
# has run (its model and split files), interleaved run by run so that both see the same load.
#
#   bash bench/evaluate_time.sh PROJECT BEFORE_TREE [RUNS]
#
# PROJECT: a clone of this repository after `dvc repro` (e.g. with data.raw set to a file of
# ../shared/data). BEFORE_TREE: a work tree of the older commit, e.g.
# `git worktree add /tmp/before 69e1d73` (the last commit before issue 23's reports). Its
# evaluate reads only the text and label columns, so it gets copies of the split files with
# those alone, and its own params.yaml with train.portable as in PROJECT's. Prints the wall
# and CPU seconds (user + system) of each run, then the minimum and the median of each tree.
set -euo pipefail
project=$(realpath "$1")
before=$(realpath "$2")
runs=${3:-8}
here=$(realpath "$(dirname "$0")/..")
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

python - "$project" "$before" "$scratch" <<'EOF'
import sys
from pathlib import Path

import pandas as pd
import yaml

project, before, scratch = (Path(p) for p in sys.argv[1:])
for part in ("train", "val", "test"):
    table = pd.read_csv(project / f"data/processed/{part}.csv", dtype=str, keep_default_na=False)
    table[["text", "label"]].to_csv(scratch / f"{part}.csv", index=False)
portable = yaml.safe_load((project / "params.yaml").read_text())["train"]["portable"]
params = yaml.safe_load((before / "params.yaml").read_text())
params["train"]["portable"] = portable
(scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
EOF

time_one() {  # TREE DATA_DIR PARAMS -> "wall cpu"
    (cd "$project" && PYTHONPATH="$1/src" /usr/bin/time -f "%e %U %S" python "$1/stages/evaluate.py" \
        --model models/model.pt --val "$2/val.csv" --test "$2/test.csv" --train "$2/train.csv" \
        --output "$scratch/out" --params "$3" 2>&1 >/dev/null | tail -1) |
        awk '{ printf "%.2f %.2f\n", $1, $2 + $3 }'
}

for run in $(seq "$runs"); do
    echo "before $(time_one "$before" "$scratch" "$scratch/params.yaml")"
    echo "after $(time_one "$here" "$project/data/processed" "$project/params.yaml")"
done | tee "$scratch/times"

python - "$scratch/times" <<'EOF'
import statistics
import sys

times: dict[str, list[tuple[float, float]]] = {}
for line in open(sys.argv[1]):
    tree, wall, cpu = line.split()
    times.setdefault(tree, []).append((float(wall), float(cpu)))
for tree, runs in times.items():
    walls, cpus = [w for w, _ in runs], [c for _, c in runs]
    print(
        f"{tree}: wall min {min(walls):.2f} s, median {statistics.median(walls):.2f} s; "
        f"cpu min {min(cpus):.2f} s, median {statistics.median(cpus):.2f} s"
    )
before, after = (min(w for w, _ in times[t]) for t in ("before", "after"))
print(f"after / before (min wall): {after / before:.2f}")
EOF
