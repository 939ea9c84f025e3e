#!/usr/bin/env bash
# Wall time of `dvc repro -f` on the bundled sample, stage by stage, and the fixed cost of a
# stage process. Run it from the repository root with the venv active:
#
#     . .venv/bin/activate && bash bench/repro.sh
#
# What it measures, in this order:
#   1. the fixed cost of each stage process, best of 3: the interpreter start plus the imports a
#      run makes, run as one file of import statements (no work). They are read with ast from
#      stages/<stage>.py and the pipeline modules it imports, those inside functions included
#      (torch, sklearn, matplotlib and dvclive load there, so `--help` no longer pays for them),
#      so the list follows the code; see script_imports below for what it leaves out.
#      `python -c pass` for the interpreter alone;
#   2. DVC's own overhead: `dvc status` on the up-to-date pipeline, best of 3;
#   3. `dvc repro -f`, once, for the total;
#   4. each stage's command exactly as dvc.lock records it, run directly under /usr/bin/time:
#      seconds and peak RSS per stage. The total minus their sum is what DVC adds.
# It refuses to start unless `dvc status` says the pipeline is up to date (otherwise
# `dvc repro -f` would rightly rewrite dvc.lock), and at the end it checks that
# `git status --porcelain` and `dvc status` read as before: the stages rewrite their outputs
# byte for byte. Numbers move with other load on the machine: keep the ones from an idle one.
set -euo pipefail

if [[ ! -f dvc.yaml || ! -d stages ]]; then
    echo "Run this from the repository root: bash bench/repro.sh" >&2
    exit 1
fi
command -v dvc >/dev/null || { echo "dvc not found: activate the venv first" >&2; exit 1; }
[[ -x /usr/bin/time ]] || { echo "/usr/bin/time (GNU time) is needed" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --no-optional-locks: only read; never take the index lock of a repo others may be using.
git_state() { git --no-optional-locks status --porcelain; }

dvc status >"$tmp/dvc-before"
if ! grep -q "up to date" "$tmp/dvc-before"; then
    cat "$tmp/dvc-before" >&2
    echo "The pipeline is not up to date: run 'dvc repro' (and commit) first." >&2
    exit 1
fi
git_state >"$tmp/git-before"

# Wall seconds of the fastest of 3 runs of a command; its output is discarded.
best_of_3() {
    local best="" seconds
    for _ in 1 2 3; do
        /usr/bin/time -f %e -o "$tmp/time" "$@" >/dev/null 2>&1
        seconds=$(<"$tmp/time")
        best=$(awk -v a="$best" -v b="$seconds" 'BEGIN { print (a == "" || b < a) ? b : a }')
    done
    echo "$best"
}

# The imports a run of a stage makes, as a file to run in the script's place: every import
# statement of the script and of the pipeline modules it imports, in turn (as
# tests/test_dvc_deps.py follows them), those inside functions included; left out are
# `if TYPE_CHECKING:` blocks and the packages of the `pretrained` extra in pyproject.toml,
# which only model.encoder 'pretrained' loads. src/ goes first on the path, as the stages put it.
# (distributed.launch's torch.distributed imports count, though only train.processes > 1 runs it.)
script_imports() {
    python - "$1" <<'EOF'
import ast
import re
import sys
import tomllib
from pathlib import Path

with open("pyproject.toml", "rb") as f:
    extra = tomllib.load(f)["project"]["optional-dependencies"]["pretrained"]
extra = {re.split(r"[^\w.-]", r)[0].replace("-", "_") for r in extra}  # import names
print(f"import sys; sys.path.insert(0, {str(Path('src').resolve())!r})")
todo, seen = [Path(sys.argv[1])], set()
while todo:
    path = todo.pop(0)
    if path in seen:
        continue
    seen.add(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in hidden or not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        if getattr(node, "level", 0):  # relative: none in stages/ or src/
            continue
        if isinstance(node, ast.ImportFrom):  # `from pipeline import data` loads pipeline.data
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            names = [a.name for a in node.names]
        top = names[0].split(".")[0]
        if top in extra or top == "__future__":
            continue
        print(ast.unparse(node))
        if top == "pipeline":
            for name in names:
                module = Path("src", *name.split("."))
                files = (module.with_suffix(".py"), module / "__init__.py")
                todo += [file for file in files if file.is_file()]
EOF
}

# Stage names in dvc.yaml order, each with its command as dvc.lock resolved it.
python - >"$tmp/stages.tsv" <<'EOF'
import yaml

with open("dvc.yaml") as f:
    names = list(yaml.safe_load(f)["stages"])
with open("dvc.lock") as f:
    locked = yaml.safe_load(f)["stages"]
for name in names:
    print(f"{name}\t{locked[name]['cmd']}")
EOF

echo "date $(date -Iseconds); $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs));" \
    "load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
echo "dvc $(dvc --version), torch $(python -c 'import torch; print(torch.__version__)'),"\
    "Python $(python -c 'import platform; print(platform.python_version())')"
echo "command: bash bench/repro.sh"
echo

python_alone=$(best_of_3 python -c pass)
dvc_status=$(best_of_3 dvc status)
declare -A import_seconds
while IFS=$'\t' read -r name cmd; do
    script=$(awk '{ print $2 }' <<<"$cmd")  # "python stages/x.py ..." -> stages/x.py
    script_imports "$script" >"$tmp/imports-$name.py"
    import_seconds[$name]=$(best_of_3 python "$tmp/imports-$name.py" </dev/null)
done <"$tmp/stages.tsv"

echo "dvc repro -f ..." >&2
/usr/bin/time -f %e -o "$tmp/time" dvc repro -f >"$tmp/repro.log" 2>&1 \
    || { cat "$tmp/repro.log" >&2; exit 1; }
repro_total=$(<"$tmp/time")

echo "| stage | process start + a run's imports s (best of 3) | run s (direct) | peak RSS MiB |"
echo "|---|---|---|---|"
stages_total=0
while IFS=$'\t' read -r name cmd; do
    echo "$name ..." >&2
    # bash -c, as DVC runs a cmd through a shell; bash execs the last command in place.
    /usr/bin/time -f "%e %M" -o "$tmp/time" bash -c "$cmd" >/dev/null 2>"$tmp/stage.err" \
        || { cat "$tmp/stage.err" >&2; exit 1; }
    read -r seconds kib <"$tmp/time"
    stages_total=$(awk -v a="$stages_total" -v b="$seconds" 'BEGIN { print a + b }')
    echo "| $name | ${import_seconds[$name]} | $seconds | $((kib / 1024)) |"
done <"$tmp/stages.tsv"
echo "| all stages, run directly | | $stages_total | |"
echo "| \`dvc repro -f\` | | $repro_total | |"
echo "| DVC's share of it (total - stages) | | $(awk -v a="$repro_total" -v b="$stages_total" 'BEGIN { printf "%.2f", a - b }') | |"
echo "| \`dvc status\` (best of 3) | | $dvc_status | |"
echo "| \`python -c pass\` (best of 3) | $python_alone | | |"

dvc status >"$tmp/dvc-after"
git_state >"$tmp/git-after"
if diff -u "$tmp/dvc-before" "$tmp/dvc-after" >&2 && diff -u "$tmp/git-before" "$tmp/git-after" >&2; then
    echo
    echo "Repository unchanged: git status --porcelain and dvc status read as before."
else
    echo "The repository changed (diff above): a stage did not rewrite its outputs identically." >&2
    exit 1
fi
