#!/usr/bin/env bash
# One call on a GPU machine: the Triton test suite (compiled kernels, float32 and bf16) and the three
# harnesses of this folder, each step under its own time limit, logs and JSON figures under $OUT.
#
#   OUT=/tmp/gpu benchmarks/gpu/device_check.sh [STEP ...]     # default: every step, in this order
#
# Steps: wheels setup env doctor report tests fla titans step graph suite save (graph: segment_graph.py, a
# hope.nl training segment replayed as a CUDA graph against the same segment run eagerly; suite: the rest of the test suite,
# not run by default; doctor: `nlc doctor --device cuda`, every backend of its built-in model against the
# float64 reference on this GPU, a minute at most; report: compile_report.py with the machine's own Triton and ptxas, its log in the summary;
# REPORT_ARGS, FLA_ARGS, TITANS_ARGS, GRAPH_ARGS, STEP_ARGS (default --graphs) and PYTEST_EXTRA pass arguments on; TESTS names the test files of
# the tests step, tests/triton by default; SHARD=I/N runs the I-th of N parts of the tests and suite steps'
# tests, for a suite longer than one call: tests/conftest.py; SKIP_PASSED="FILE ..." leaves out of both the
# tests that any FILE, an earlier run's tests.txt or suite.txt, names as passed or skipped, to finish a cut-off run;
# WORKERS test processes, each with the machine's cores / WORKERS torch threads unless OMP_NUM_THREADS says).
# `setup` installs nlc (editable, no dependencies) and any
# wheels found in .whl/ (lark, titans-pytorch, flash-linear-attention and what they need) for a machine
# that cannot reach a package index, and unpacks .gpu-cache/triton-cache.part-* into Triton's cache where
# they exist. `save` (not run by default; name it last) packs Triton's cache, with the autotuners' results
# (TRITON_CACHE_AUTOTUNING), into $OUT/triton-cache.part-aa, -ab, ... of 15 MB each (files of at most 16 MB
# come back from a lent machine), at most SAVE_PARTS (3) of them: copied to .gpu-cache/ and carried, they
# spare the next machine the compilation of every kernel and fla's autotuning (38 s of its first forward
# and 92 s of its first forward + backward on the H100; a cache of 34 MB after the harnesses).
# `wheels` (never by default; run it on a machine that reaches a package index, before carrying the
# folder) downloads into .whl/ the wheels that `setup` installs: WHEELS, what this project and its
# benchmarks need beyond a CUDA machine's usual image (torch, triton, jinja2, click, networkx, pytest,
# hypothesis...), for WHEEL_PYTHON (3.12) on x86-64 Linux.
# Limits in seconds come from LIMIT_<STEP> (e.g. LIMIT_TESTS=300): a step past its limit gets SIGINT, so that
# pytest still prints its failures and slowest tests (--durations), and is killed 20 s later.
set -u
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/nlc-gpu}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY="${PY:-python3}"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/nlc-triton-cache}"
export TRITON_CACHE_AUTOTUNING="${TRITON_CACHE_AUTOTUNING:-1}"   # the autotuners' choices in the cache too
LOG="$OUT/summary.txt"

run_step() {  # name limit command...
    local name="$1" limit="$2"; shift 2
    local start=$SECONDS
    echo "=== $name (limit ${limit}s): $*" | tee -a "$LOG"
    local file="$OUT/$name.txt"
    # at most 8 files come back from a lent machine: the harnesses' logs only as tails in the summary
    # (their figures are in their JSON files)
    [[ "$name" == tests || "$name" == suite ]] || file="/tmp/nlc-$name.txt"
    # SIGINT first: pytest then still prints its summary (failures, --durations); KILL 20 s later
    timeout -s INT -k 20 "$limit" "$@" >"$file" 2>&1
    local rc=$?
    echo "=== $name: rc=$rc after $((SECONDS - start))s" | tee -a "$LOG"
    # the harnesses' rows and --profile tables whole (a tail of 30 lines kept only the last row's), the
    # rest's last 30 lines
    local lines=30
    [[ "$name" == tests || "$name" == suite ]] || lines=400
    tail -n "${TAIL:-$lines}" "$file" | tee -a "$LOG"
}

step_setup() {
    if compgen -G ".whl/*.whl" >/dev/null; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    if compgen -G ".gpu-cache/triton-cache.part-*" >/dev/null; then
        mkdir -p "$TRITON_CACHE_DIR" && cat .gpu-cache/triton-cache.part-* | tar -xz -C "$TRITON_CACHE_DIR" \
            && echo "Triton cache: $(find "$TRITON_CACHE_DIR" -type f | wc -l) files unpacked"
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
        || "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .
}

step_env() {
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
    "$PY" -c 'import sys, torch, triton; print(sys.version.split()[0], "torch", torch.__version__, "triton", triton.__version__, torch.cuda.get_device_name())'
    "$PY" -c 'import nldsl, lark; from nldsl.runtime.triton import LevelKernels; print("nldsl from", nldsl.__file__)'
    "$PY" -c 'import importlib.metadata as m; print(*(f"{p} {m.version(p)}" for p in ("fla-core", "titans-pytorch")))'
}

want() {
    if [ "$#" -eq 0 ]; then [ "$STEP" != suite ] && [ "$STEP" != save ] && [ "$STEP" != wheels ]
    else [[ " $* " == *" $STEP "* ]]; fi
}

step_save() {
    local parts="${SAVE_PARTS:-3}"
    mkdir -p "$TRITON_CACHE_DIR" && tar -cz -C "$TRITON_CACHE_DIR" . | split -b 15000000 - "$OUT/triton-cache.part-" \
        || return
    local made
    made=$(compgen -G "$OUT/triton-cache.part-*" | wc -l)
    if [ "$made" -gt "$parts" ]; then
        echo "Triton cache: $made parts of 15 MB, more than SAVE_PARTS=$parts; not kept"
        rm -f "$OUT"/triton-cache.part-*
    else
        echo "Triton cache: $(du -ch "$OUT"/triton-cache.part-* | tail -n 1 | cut -f1) in $made part(s), $OUT/triton-cache.part-*"
    fi
}

# lark: the parser; fla-core: flash-linear-attention's kernels (kernels_vs_fla.py); titans-pytorch 0.5.5 and
# what it imports (titans_vs_titans_pytorch.py, tests/triton/test_benchmark_mlp.py); pytest-xdist and
# pytest-timeout for the tests and suite steps (-n, --timeout), where the image lacks them
WHEELS="${WHEELS:-lark interegular fla-core==0.6.0 titans-pytorch==0.5.5 assoc-scan accelerated-scan \
axial-positional-embedding einx frozendict hyper-connections torch-einops-utils rotary-embedding-torch tensordict \
pyvers x-transformers loguru pytest-xdist execnet pytest-timeout}"

step_wheels() {
    local platforms=(manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64)
    # shellcheck disable=SC2086  # WHEELS is a list of requirements
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${WHEEL_PYTHON:-3.12}" \
        --implementation cp "${platforms[@]/#/--platform=}" -d .whl $WHEELS \
        && echo "wheels: $(compgen -G '.whl/*.whl' | wc -l) in .whl/, $(du -sh .whl | cut -f1)"
}

# torch's CPU threads per test worker: by default each takes every core, and 15 workers on 16 cores ran the
# float64 reference tests of the twelfth run several times slower than alone
THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / ${WORKERS:-12} > 0 ? $(nproc) / ${WORKERS:-12} : 1 ))}"

STEPS=(wheels setup env doctor report tests fla titans step graph suite save)
for STEP in "${STEPS[@]}"; do
    want "$@" || continue
    case "$STEP" in
        wheels) echo "=== wheels" | tee -a "$LOG"; step_wheels 2>&1 | tee -a "$LOG" ;;
        setup) echo "=== setup" | tee -a "$LOG"; step_setup >>"$LOG" 2>&1; echo "=== setup: rc=$?" | tee -a "$LOG"
               export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} ;;
        env) echo "=== env" | tee -a "$LOG"; step_env 2>&1 | tee -a "$LOG" ;;
        doctor) run_step doctor "${LIMIT_DOCTOR:-90}" "$PY" -m nldsl.cli doctor --device cuda ${DOCTOR_ARGS:-} ;;
        report) run_step report "${LIMIT_REPORT:-60}" "$PY" benchmarks/gpu/compile_report.py \
                    ${REPORT_ARGS:-gdn128 titans_small --dtype bfloat16} ;;
        tests) OMP_NUM_THREADS=$THREADS NLC_FAILURE_LOG="$OUT/failures.txt" run_step tests "${LIMIT_TESTS:-200}" "$PY" -m pytest -v \
                   -p no:cacheprovider -p no:benchmark ${TESTS:-tests/triton} -n "${WORKERS:-12}" --timeout=170 -rfE --durations=30 \
                   ${SHARD:+--shard $SHARD} ${SKIP_PASSED:+$(printf -- " --skip-passed %s" $SKIP_PASSED)} ${PYTEST_EXTRA:-} ;;
        fla) run_step fla "${LIMIT_FLA:-150}" "$PY" benchmarks/gpu/kernels_vs_fla.py --json "$OUT/fla.json" \
                 ${FLA_ARGS:-} ;;
        titans) run_step titans "${LIMIT_TITANS:-70}" "$PY" benchmarks/gpu/titans_vs_titans_pytorch.py \
                    --json "$OUT/titans.json" ${TITANS_ARGS:-} ;;
        # -v: each test's outcome in suite.txt, for a later SKIP_PASSED
        # `tests` named: --skip-passed is tests/conftest.py's option, unknown to pytest before it loads that file
        suite) OMP_NUM_THREADS=$THREADS run_step suite "${LIMIT_SUITE:-300}" "$PY" -m pytest tests -v -p no:cacheprovider \
                   -p no:benchmark -n "${WORKERS:-12}" --timeout=280 -m "not triton and not browser" -rfE --durations=30 \
                   ${SHARD:+--shard $SHARD} ${SKIP_PASSED:+$(printf -- " --skip-passed %s" $SKIP_PASSED)} ;;
        save) echo "=== save" | tee -a "$LOG"; step_save 2>&1 | tee -a "$LOG" ;;
        graph) run_step graph "${LIMIT_GRAPH:-120}" "$PY" benchmarks/gpu/segment_graph.py ${GRAPH_ARGS:-} ;;
        # both backends with and without CUDA graphs (--graphs), unless STEP_ARGS says otherwise
        step) run_step step_f32 "${LIMIT_STEP:-90}" "$PY" benchmarks/gpu/train_step.py --json "$OUT/step_f32.json" \
                  ${STEP_ARGS---graphs}
              run_step step_bf16 "${LIMIT_STEP:-90}" "$PY" benchmarks/gpu/train_step.py --dtype bfloat16 \
                  --json "$OUT/step_bf16.json" ${STEP_ARGS---graphs} ;;
    esac
done
