#!/usr/bin/env bash
# The GPU proof in one device call (issue #15).
#
#   benchmarks/gpu_check.sh [OUTDIR]        on a machine with a CUDA GPU (default OUTDIR:
#                                           benchmarks/results/); under 8 minutes on one H100
#   benchmarks/gpu_check.sh --dry-run [OUTDIR]
#                                           on a CPU machine: everything that can be checked
#                                           without a GPU (default OUTDIR: a new /tmp folder)
#
# Run from anywhere; it works in the repository root. Every stage runs under a timeout and the
# script keeps going after a failing stage; at the end it writes OUTDIR/gpu_check.md (device,
# stages, each GPU target met / not met with its numbers), packs the logs into
# OUTDIR/gpu_check-logs.tar.gz, prints the stage timings and the targets, and exits non-zero if
# any stage failed (a target that is not met is reported, not an exit status; the tests that
# assert targets fail their stage).
#
# GPU stages, in order (each under its own timeout, all within GPU_CHECK_BUDGET_S):
#   env              nvidia-smi, python / torch / CUDA / nvcc / cmake versions; needs a CUDA device
#   build-extension  pip install --no-index --no-build-isolation --no-deps -e . (CUDA kernels
#                    compiled for this GPU's architecture); kernels-build runs alongside it
#   backend          from outside the checkout: import trilevelnas, ops.backend() must report
#                    cuda_kernels: True and a CUDA device (-> logs/backend.json)
#   kernels-build    cmake -S . -B <tmp>/kernels-build && cmake --build (standalone kernels/)
#   kernels-ctest    ctest --test-dir <tmp>/kernels-build (kernels/tests/*.cu on the GPU)
#   pytest-gpu       the CUDA and compiled-Triton tests of tests/ (TRITON_INTERPRET unset; any
#                    skip counts as a failure here), launch-count and bandwidth tests included
#   gpu-step         benchmarks/gpu_step.py --out OUTDIR (targets; CUDA events, peak memory)
#   bench-<suite>    the sweep's suites one by one: supernet, relax, superconv, models, inference, training
#   sweep-report     python benchmarks/sweep.py --from-json <merged> --out OUTDIR
#                    -> OUTDIR/<device>.{json,md,png}
#   summary          benchmarks/gpu_step.py --summary -> OUTDIR/gpu_check.md
#
# Dry-run stages: syntax (bash -n of this script, py_compile of gpu_step.py and sweep.py),
# kernels-build (the CMake/nvcc build of kernels/, no ctest), gpu-step (gpu_step.py --dry-run:
# every part on the CPU at tiny sizes), pytest-collect (the pytest-gpu selection collects and holds
# the expected tests), bench-supernet / bench-relax (one small benchmark each) and sweep-report
# (the merge -> sweep.py --from-json path), csrc-nvcc (nvcc -c of csrc/cuda/*.cu against the
# installed torch's headers, run in the background meanwhile; a CPU torch lacks
# c10/cuda/impl/cuda_cmake_macros.h, so a stand-in is written in a temp folder), summary.
#
# Why `-e .` and not a plain `pip install .`: the tests and sweep.py run from the repository root
# (sweep.py starts pytest with cwd = the checkout), where Python imports the source tree's
# trilevelnas/, which has no compiled extension after a non-editable install (README). The
# editable install builds trilevelnas/_C*.so in the source tree, so the same build is imported
# from the checkout and from anywhere else (the backend stage imports it from a temp folder).
# If pip fails, the stage is marked failed and `setup.py build_ext --inplace` + PYTHONPATH is
# tried so that the later stages still yield information.
#
# Why the suites are not one `python benchmarks/sweep.py` call: sweep.py writes its report only
# when every suite has finished, so one timeout would lose all of it; each suite runs as sweep.py
# would run it (its pytest arguments, plus a shorter --benchmark-max-time to fit the budget), under
# its own timeout, and sweep.py then builds one report from their merged pytest-benchmark JSON
# (measuring the machine once). With the default budget the later suites may not be reached:
# they are listed as skipped (time budget).
#
# Environment knobs: PYTHON (default python3), GPU_CHECK_BUDGET_S (default 450: the stages stop
# being started past it), GPU_CHECK_SWEEP_SUITES (default "supernet relax superconv models inference training"),
# GPU_CHECK_BENCH_MAX_TIME (pytest-benchmark --benchmark-max-time, default 0.1), GPU_CHECK_SKIP
# (stage names to skip, e.g. "pytest-gpu gpu-step" for a second run that only wants the sweep),
# TNAS_BENCH_ROUNDS (default 3), TORCH_CUDA_ARCH_LIST (default: the GPU's), MAX_JOBS,
# GPU_CHECK_DRY_ARCH (dry run's nvcc -arch, default sm_90).
# With the device tool: `benchmarks/gpu_check.sh "$OUT"` (at most 6 files come back: gpu_check.md,
# gpu_step.json, <device>.json/.md/.png, gpu_check-logs.tar.gz).
set -euo pipefail

usage() { sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; }

DRY=0
OUTDIR=""
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu_check.sh: unknown option $arg" >&2; usage >&2; exit 2 ;;
    *) [[ -z "$OUTDIR" ]] || { echo "gpu_check.sh: one OUTDIR only" >&2; exit 2; }; OUTDIR=$arg ;;
  esac
done

SCRIPT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
ROOT=$(cd "$(dirname "$SCRIPT")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-$(command -v python3 || command -v python || echo python3)}
NPROC=$(nproc 2>/dev/null || echo 4)
START_EPOCH=$(date +%s)
if (( DRY )); then
  BUDGET=${GPU_CHECK_BUDGET_S:-900}
  OUTDIR=${OUTDIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-dry.XXXXXX")}
else
  BUDGET=${GPU_CHECK_BUDGET_S:-450}
  OUTDIR=${OUTDIR:-benchmarks/results}
fi
mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOGS=$OUTDIR/gpu_check-logs
rm -rf "$LOGS" "$OUTDIR/gpu_check-logs.tar.gz"
mkdir -p "$LOGS"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check-work.XXXXXX")
KBUILD=$WORK/kernels-build   # fresh: never reuse a kernels/build of another configuration
STAGES=$LOGS/stages.tsv
: >"$STAGES"
FAILED=0
BG_PIDS=()

cleanup() {
  local pid
  for pid in "${BG_PIDS[@]}"; do
    kill -- "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s; }
elapsed() { echo $(( $(now) - START_EPOCH )); }

# to LOG CMD...: run CMD (output appended to LOG) under the current stage's remaining time.
to() {
  local log=$1; shift
  local left=$(( STAGE_DEADLINE - $(now) ))
  (( left >= 1 )) || left=1
  echo "+ $*" >>"$log"
  timeout -k 10 "$left" "$@" >>"$log" 2>&1
}

note() { echo "$*" >>"$WORK/note"; }

# pyrun LOG ARGS...: python ARGS under `to`, with the checkout on PYTHONPATH when the extension
# was built by the build_ext fallback rather than installed
pyrun() {
  local log=$1; shift
  local extra=()
  [[ -f "$WORK/pythonpath" ]] && extra=("PYTHONPATH=$(cat "$WORK/pythonpath")${PYTHONPATH:+:$PYTHONPATH}")
  to "$log" env "${extra[@]}" "$PY" "$@"
}

# wait_bg: wait for the background jobs (in the main shell: a stage's subshell cannot wait for them)
wait_bg() {
  local pid
  for pid in "${BG_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  BG_PIDS=()
}

# record NAME STATUS SECONDS NOTE
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$STAGES"
  printf '== %-16s %-14s %5ss  %s\n' "$1" "$2" "$3" "$4"
}

# stage NAME CAP FUNC [ARGS]: FUNC runs in a subshell with `set -e`, so any failing command fails
# the stage; it gets min(CAP, what is left of the budget) seconds (stages are skipped once less
# than 15 s is left). Notes written with `note` go into the stage table.
stage() {
  local name=$1 cap=$2 func=$3; shift 3
  if [[ " ${GPU_CHECK_SKIP:-} " == *" $name "* ]]; then
    record "$name" "skipped" 0 "GPU_CHECK_SKIP"
    return 0
  fi
  local left=$(( BUDGET - $(elapsed) )) t=$cap
  (( t <= left )) || t=$left
  if (( t < 15 )); then
    record "$name" "skipped" 0 "time budget (${BUDGET}s) spent"
    return 0
  fi
  : >"$WORK/note"
  echo "== $name: start (timeout ${t}s, ${left}s of the budget left)"
  export STAGE_DEADLINE=$(( $(now) + t ))
  local s rc status
  s=$(now)
  set +e
  ( set -e; "$func" "$@" )
  rc=$?
  set -e
  if (( rc == 0 )); then
    status=ok
  elif (( rc == 124 || rc == 137 )) || (( $(now) >= STAGE_DEADLINE )); then
    status=TIMEOUT; FAILED=1
  else
    status="FAILED (rc $rc)"; FAILED=1
  fi
  record "$name" "$status" "$(( $(now) - s ))" "$(tr '\n' ' ' <"$WORK/note" | sed 's/|/\//g; s/ *$//')"
  if [[ "$status" != ok ]]; then
    local log=$LOGS/$name.log
    if [[ -f "$log" ]]; then
      echo "-- last lines of $log:"
      tail -n 25 "$log"
    fi
  fi
  return 0
}

# ------------------------------------------------------------------------------------ stages
st_env() {
  local log=$LOGS/env.log
  {
    echo "date: $(date -Is)"; echo "host: $(uname -a)"; echo "python: $PY"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)" \
         "($(git status --porcelain 2>/dev/null | wc -l) changed paths)"
  } >>"$log"
  to "$log" nvidia-smi || note "nvidia-smi failed"
  to "$log" nvcc --version || note "no nvcc"
  to "$log" cmake --version || note "no cmake"
  local rc=0
  to "$log" "$PY" -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available()); print(torch.cuda.get_device_name() if torch.cuda.is_available() else \
'no CUDA device'); sys.exit(0 if torch.cuda.is_available() else 1)" || rc=$?
  note "$(tail -n 1 "$log")"
  return "$rc"
}

kernels_build_bg() {  # in the background, alongside the extension build
  local log=$LOGS/kernels-build.log s
  s=$(now)
  set +e
  {
    timeout -k 10 "$1" cmake -S "$ROOT" -B "$KBUILD" -DCMAKE_BUILD_TYPE=Release &&
      timeout -k 10 "$1" cmake --build "$KBUILD" -j "$2"
  } >>"$log" 2>&1
  echo "$? $(( $(now) - s ))" >"$WORK/kbuild.rc"
}

st_build_extension() {
  local log=$LOGS/build-extension.log
  if [[ -z "${TORCH_CUDA_ARCH_LIST:-}" ]]; then
    TORCH_CUDA_ARCH_LIST=$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())" \
                           2>>"$log") || { note "no CUDA device to build for"; return 1; }
    export TORCH_CUDA_ARCH_LIST
  fi
  export MAX_JOBS=${MAX_JOBS:-$NPROC}
  note "TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
  if to "$log" "$PY" -m pip install --no-index --no-build-isolation --no-deps -v -e .; then
    return 0
  fi
  note "pip install -e failed; trying setup.py build_ext --inplace + PYTHONPATH"
  if to "$log" "$PY" setup.py build_ext --inplace; then
    echo "$ROOT" >"$WORK/pythonpath"
    note "fallback build ok"
  fi
  return 1
}

st_backend() {
  local log=$LOGS/backend.log rc=0
  # from outside the checkout, so that the installed package is what imports
  (cd "$WORK" && pyrun "$log" - "$LOGS/backend.json" <<'EOF'
import json, sys
import torch
import trilevelnas
import trilevelnas.ops as ops
b = ops.backend()
b["module"] = trilevelnas.__file__
b["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
with open(sys.argv[1], "w") as f:
    json.dump(b, f)
print(json.dumps(b))
assert b["extension"], b["extension_error"]
assert b["cuda_kernels"] is True, "the extension has no CUDA kernels"
assert b["cuda_device"] is True, "no CUDA device"
EOF
  ) || rc=$?
  note "$(tail -n 1 "$log" | cut -c1-300)"
  return "$rc"
}

st_kernels_build() {
  [[ -f "$WORK/kbuild.rc" ]] || { note "no result from the background build"; return 1; }
  local rc secs
  read -r rc secs <"$WORK/kbuild.rc"
  note "built in ${secs}s (alongside the previous stage)"
  return "$rc"
}

st_kernels_ctest() {
  local log=$LOGS/kernels-ctest.log rc=0
  to "$log" ctest --test-dir "$KBUILD" --output-on-failure --no-tests=error --timeout 120 || rc=$?
  note "$(grep -E 'tests passed|No tests were found' "$log" | tail -n 1)"
  return "$rc"
}

PYTEST_FILES=(tests/test_extension.py tests/test_ops_relax.py tests/test_ops_superconv.py
              tests/test_supernet.py tests/test_programs.py)
PYTEST_K="cuda or triton or test_extension or bad_arguments_raise_clear_errors"
# the tests that must be in the selection (the launch-count and bandwidth targets among them)
PYTEST_EXPECT=(test_cuda_search_call_launch_counts test_cuda_rows_forward_reaches_60_percent_of_copy_bandwidth
               test_cuda_ops_match_reference test_cuda_order_penalty_is_exact_on_a_grid
               test_cuda_matches_reference test_triton_packed_ops_match_reference
               test_triton_matches_reference test_cuda_supernet_matches_cpu
               test_half_precision_on_cuda_is_close_to_fp32 test_backend_report_is_consistent)

st_pytest_gpu() {
  local log=$LOGS/pytest-gpu.log rc=0
  unset TRITON_INTERPRET  # compiled Triton on the GPU, not the interpreter
  pyrun "$log" -m pytest -p no:cacheprovider -q -rfEs "${PYTEST_FILES[@]}" -k "$PYTEST_K" \
    --junitxml="$LOGS/pytest.xml" || rc=$?
  note "$(grep -E '(passed|failed|error)' "$log" | tail -n 1)"
  # a skip here means a GPU path did not run (no CUDA kernels, no Triton, ...): a failure
  "$PY" - "$LOGS/pytest.xml" <<'EOF' >>"$log" 2>&1 || { note "skips: see pytest-gpu.log"; (( rc )) || rc=1; }
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
s = [root] if root.tag == "testsuite" else root.findall("testsuite")
skipped = sum(int(x.get("skipped", 0)) for x in s)
if skipped:
    print(f"{skipped} test(s) skipped: on a GPU every selected test must run")
    sys.exit(1)
EOF
  return "$rc"
}

st_pytest_collect() {
  local log=$LOGS/pytest-collect.log
  unset TRITON_INTERPRET
  pyrun "$log" -m pytest -p no:cacheprovider --collect-only -q \
    "${PYTEST_FILES[@]}" -k "$PYTEST_K"
  local t missing=0
  for t in "${PYTEST_EXPECT[@]}"; do
    grep -q "::$t" "$log" || { note "missing from the selection: $t"; missing=1; }
  done
  note "$(grep -E 'tests? collected' "$log" | tail -n 1)"
  return "$missing"
}

st_gpu_step() {
  local args=(--out "$OUTDIR")
  if (( DRY )); then args+=(--dry-run); fi
  local log=$LOGS/gpu-step.log rc=0
  PYTHONUNBUFFERED=1 pyrun "$log" benchmarks/gpu_step.py "${args[@]}" || rc=$?
  note "targets: $(grep -c '^  \[met\]' "$log") met, $(grep -c '^  \[not met\]' "$log") not met," \
       "$(grep -c '^  \[not measured' "$log") not measured"
  return "$rc"
}

# bench SUITE [pytest args]: one sweep suite, as sweep.py's run_suites runs it
st_bench() {
  local suite=$1; shift
  local log=$LOGS/bench-$suite.log rc=0
  if (( DRY )); then export TNAS_BENCH_QUICK=1; fi  # small shapes on the CPU
  export TNAS_BENCH_ROUNDS=${TNAS_BENCH_ROUNDS:-3}
  pyrun "$log" -m pytest -q -p no:cacheprovider "benchmarks/test_bench_$suite.py" \
    --benchmark-json="$LOGS/bench-$suite.json" --benchmark-columns=median,min,rounds \
    --benchmark-sort=name --benchmark-max-time="${GPU_CHECK_BENCH_MAX_TIME:-0.1}" \
    --benchmark-min-rounds=3 "$@" || rc=$?
  note "$(grep -E '(passed|failed|error)' "$log" | tail -n 1)"
  return "$rc"
}

st_sweep_report() {
  local log=$LOGS/sweep-report.log
  "$PY" - "$WORK/bench-merged.json" "$LOGS"/bench-*.json >>"$log" 2>&1 <<'EOF'
import json, sys
merged = None
for path in sys.argv[2:]:
    try:
        data = json.load(open(path))
    except (OSError, ValueError) as exc:
        print(f"skipping {path}: {exc}")
        continue
    if merged is None:
        merged = data
    else:
        merged["benchmarks"].extend(data.get("benchmarks", []))
if merged is None:
    sys.exit("no benchmark JSON to report")
json.dump(merged, open(sys.argv[1], "w"))
print(f"merged {len(merged['benchmarks'])} benchmarks from {len(sys.argv) - 2} file(s)")
EOF
  note "$(tail -n 1 "$log")"
  local quick=()
  if (( DRY )); then quick=(--quick); fi
  pyrun "$log" benchmarks/sweep.py --from-json "$WORK/bench-merged.json" "${quick[@]}" --out "$OUTDIR"
  note "$(tail -n 1 "$log")"
}

# dry run only ---------------------------------------------------------------------------------
st_syntax() {
  bash -n "$SCRIPT"
  to "$LOGS/syntax.log" "$PY" -m py_compile benchmarks/gpu_step.py benchmarks/sweep.py
  note "bash -n, py_compile gpu_step.py sweep.py"
}

# nvcc compile of csrc/cuda/*.cu against the installed torch's headers (setup.py's flags). A CPU
# torch ships c10/cuda/ without the generated c10/cuda/impl/cuda_cmake_macros.h: a stand-in is
# written under the temp folder (never into the repository or torch).
csrc_nvcc_bg() {
  local log=$LOGS/csrc-nvcc.log s rc=0
  s=$(now)
  set +e
  local flags=()
  mapfile -t flags < <("$PY" - "$WORK/standin" <<'EOF' 2>>"$log"
import os, sys
import torch
from torch.utils import cpp_extension as ce
inc = ce.include_paths()
standin = sys.argv[1]
if not any(os.path.exists(os.path.join(p, "c10/cuda/impl/cuda_cmake_macros.h")) for p in inc):
    os.makedirs(os.path.join(standin, "c10/cuda/impl"), exist_ok=True)
    with open(os.path.join(standin, "c10/cuda/impl/cuda_cmake_macros.h"), "w") as f:
        f.write("#pragma once\n// stand-in for the header a CUDA build of torch generates\n"
                "#define C10_CUDA_BUILD_SHARED_LIBS\n")
    inc = [standin] + inc
abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
print("\n".join([f"-I{p}" for p in inc] + ce.COMMON_NVCC_FLAGS
                + [f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-DTORCH_API_INCLUDE_EXTENSION_H",
                   "-DTORCH_EXTENSION_NAME=_C"]))
EOF
  )
  if (( ${#flags[@]} == 0 )); then
    echo "1 0" >"$WORK/csrc.rc"; return
  fi
  local f
  for f in "$ROOT"/csrc/cuda/*.cu; do
    echo "+ nvcc $f" >>"$log"
    timeout -k 10 "$1" nvcc -c "$f" -o "$WORK/$(basename "$f" .cu).o" "${flags[@]}" \
      -I"$ROOT/kernels" -I"$ROOT/csrc" -DTRILEVELNAS_WITH_CUDA=1 -O3 --use_fast_math -std=c++17 \
      -arch="${GPU_CHECK_DRY_ARCH:-sm_90}" -Xcompiler -fPIC >>"$log" 2>&1 || rc=1
  done
  echo "$rc $(( $(now) - s ))" >"$WORK/csrc.rc"
}

st_csrc_nvcc() {
  [[ -f "$WORK/csrc.rc" ]] || { note "no result from the background compile"; return 1; }
  local rc secs
  read -r rc secs <"$WORK/csrc.rc"
  local f names=""
  for f in "$ROOT"/csrc/cuda/*.cu; do names+="$(basename "$f") "; done
  note "${names}compiled in ${secs}s" \
       "(-arch=${GPU_CHECK_DRY_ARCH:-sm_90}$([[ -d "$WORK/standin" ]] && echo ', stand-in cuda_cmake_macros.h'))"
  return "$rc"
}

st_kernels_build_dry() {
  to "$LOGS/kernels-build.log" cmake -S "$ROOT" -B "$KBUILD" -DCMAKE_BUILD_TYPE=Release
  to "$LOGS/kernels-build.log" cmake --build "$KBUILD" -j "$NPROC"
  local n
  n=$(ctest --test-dir "$KBUILD" -N 2>/dev/null | grep -Eo 'Total Tests: [0-9]+' || echo "?")
  note "built (no ctest without a GPU; ${n} registered here)"
}

# ------------------------------------------------------------------------------------ main
echo "gpu_check.sh: $( (( DRY )) && echo 'DRY RUN, ' )OUTDIR=$OUTDIR, budget ${BUDGET}s, python $PY"
read -ra SUITES <<<"${GPU_CHECK_SWEEP_SUITES:-supernet relax superconv models inference training}"
if (( DRY )); then
  # the dry run's cores are shared: the csrc compile runs in the background meanwhile
  csrc_nvcc_bg 400 & BG_PIDS+=($!)
  stage syntax 30 st_syntax
  stage kernels-build 400 st_kernels_build_dry
  stage gpu-step 300 st_gpu_step
  stage pytest-collect 120 st_pytest_collect
  # one small benchmark per suite: the path bench JSON -> merge -> sweep.py --from-json
  stage bench-supernet 180 st_bench supernet -k "fixed and sparse and rho1"
  stage bench-relax 120 st_bench relax -k "sparsestmax and fused and search and not bwd"
  stage sweep-report 120 st_sweep_report
  wait_bg
  stage csrc-nvcc 400 st_csrc_nvcc
else
  stage env 30 st_env
  kernels_build_bg 240 "$NPROC" & BG_PIDS+=($!)
  stage build-extension 270 st_build_extension
  stage backend 60 st_backend
  wait_bg
  stage kernels-build 30 st_kernels_build
  stage kernels-ctest 90 st_kernels_ctest
  stage pytest-gpu 180 st_pytest_gpu
  stage gpu-step 180 st_gpu_step
  for suite in "${SUITES[@]}"; do
    extra=()
    case "$suite" in
      supernet) extra=(-k "not rho0.5") ;;  # ρ = 0.5 is in no target
      models) extra=(-k "not compile") ;;   # torch.compile: minutes of compiling
    esac
    # keep ~30 s of the budget for the report and the summary
    BUDGET=$(( BUDGET - 30 )) stage "bench-$suite" 200 st_bench "$suite" "${extra[@]}"
  done
  if compgen -G "$LOGS/bench-*.json" >/dev/null; then
    BUDGET=$(( BUDGET + 15 )) stage sweep-report 45 st_sweep_report
  else
    record sweep-report skipped 0 "no suite wrote results"
  fi
fi

# ------------------------------------------------------------------------------------ summary
commit=$(git rev-parse --short HEAD 2>/dev/null || true)
summary_args=(--summary --out "$OUTDIR" --stages "$STAGES" --logs "$LOGS" --since "$START_EPOCH"
              --commit "$commit")
if (( DRY )); then summary_args+=(--dry-run); fi
if ! "$PY" benchmarks/gpu_step.py "${summary_args[@]}" >"$LOGS/summary.log" 2>&1; then
  FAILED=1
  cat "$LOGS/summary.log"
  {
    echo "# GPU check (summary script failed: see gpu_check-logs.tar.gz, summary.log)"; echo
    echo "| stage | status | time | note |"; echo "|---|---|---|---|"
    awk -F'\t' '{ printf "| %s | %s | %s s | %s |\n", $1, $2, $3, $4 }' "$STAGES"
  } >"$OUTDIR/gpu_check.md"
fi
echo
echo "== stage timings (total $(elapsed)s)"
awk -F'\t' '{ printf "  %-16s %-14s %5ss  %s\n", $1, $2, $3, $4 }' "$STAGES"
echo
# one file for the logs (the device tool brings back at most 8 files)
tar czf "$OUTDIR/gpu_check-logs.tar.gz" -C "$OUTDIR" gpu_check-logs && rm -rf "$LOGS"
awk '/^## GPU targets/ { on = 1 } /^## / && !/^## GPU targets/ { on = 0 } on' "$OUTDIR/gpu_check.md"
echo "wrote $OUTDIR/gpu_check.md, $OUTDIR/gpu_check-logs.tar.gz"
ls -1 "$OUTDIR"
if (( FAILED )); then
  echo "gpu_check.sh: some stage failed (see the table above and $OUTDIR/gpu_check.md)" >&2
  exit 1
fi
