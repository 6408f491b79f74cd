#!/usr/bin/env bash
# Clang's -Wthread-safety over every source file that holds shared state under an absl::Mutex
# (ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED), with the flags the build uses
# (build/compile_commands.json): syntax only, so it takes seconds, and any warning fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build}
command -v clang++ >/dev/null || { echo "clang++ not found: run tools/install_deps.sh" >&2; exit 1; }
mapfile -t files < <(grep -rlE 'ABSL_GUARDED_BY|ABSL_EXCLUSIVE_LOCKS_REQUIRED' src tools scheduler \
  --include='*.h' --include='*.cc' | sed -E 's/\.h$/.cc/' | sort -u | while read -r f; do
    [[ -f $f ]] && echo "$f"
  done)
python3 - "$BUILD/compile_commands.json" "${files[@]}" <<'PY'
import json, os, shlex, subprocess, sys
db = {os.path.realpath(e["file"]): e for e in json.load(open(sys.argv[1]))}
failed = 0
for f in sys.argv[2:]:
    e = db.get(os.path.realpath(f))
    if e is None:
        print(f"thread-safety: {f} is not in the build, skipped")
        continue
    args = shlex.split(e["command"])[1:]
    keep, skip = [], False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("-o", "-MF", "-MT"):
            skip = True
            continue
        if a in ("-c", "-MD") or a.endswith(".o"):
            continue
        keep.append(a)
    cmd = ["clang++", "-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety",
           "-Wno-unknown-warning-option", "-Wno-error"] + keep
    r = subprocess.run(cmd, cwd=e["directory"], capture_output=True, text=True)
    bad = [l for l in r.stderr.splitlines() if "thread-safety" in l]
    if r.returncode != 0 and not bad:
        bad = r.stderr.splitlines()[:20]
    if bad:
        failed += 1
        print(f"thread-safety: {f}:\n" + "\n".join(bad))
    else:
        print(f"thread-safety: {f}: ok")
sys.exit(1 if failed else 0)
PY
