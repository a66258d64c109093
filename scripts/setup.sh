#!/usr/bin/env bash
# Prepare a virtual environment for nlc. Idempotent: a second run only checks and returns.
#
#   scripts/setup.sh          # .venv + torch (if missing) + triton + `pip install -e .`
#   scripts/setup.sh --test   # the same, plus the test, hf and titans extras, and what the rendering tests drive:
#                             # Debian's chromium and graphviz, Mermaid from the npm registry
#
# Environment:
#   VENV         where the virtual environment lives (default: .venv in the repository root)
#   PYTHON       the interpreter that creates it (default: python3)
#   TORCH_INDEX  an extra package index to take the CPU build of torch from (default: none, the
#                ordinary indexes; point it at PyTorch's CPU wheel index where pip would otherwise
#                pick a CUDA build)
#
# The venv is created with --system-site-packages so that a torch already installed for the system
# (for example a CUDA build) is reused; the CPU build of torch is installed only if `import torch` fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="2.13.0"
TORCH_INDEX="${TORCH_INDEX-}"

with_tests=0
for arg in "$@"; do
    case "$arg" in
        --test) with_tests=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { printf 'setup: %s\n' "$*"; }

# 1. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV (with system site packages)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
fi
py="$VENV/bin/python"
pip=("$py" -m pip --disable-pip-version-check)

# 2. torch: keep whatever build is importable; otherwise install the CPU build.
if ! "$py" -c 'import torch' >/dev/null 2>&1; then
    say "installing torch==$TORCH_VERSION (CPU build)"
    index_args=()
    if [ -n "$TORCH_INDEX" ]; then
        index_args=(--extra-index-url "$TORCH_INDEX")
    fi
    "${pip[@]}" install ${index_args[@]+"${index_args[@]}"} "torch==$TORCH_VERSION"
fi

# 3. triton (Linux only; the Triton paths of nlc are skipped elsewhere).
if [ "$(uname -s)" = "Linux" ]; then
    if ! "$py" -c 'import triton' >/dev/null 2>&1; then
        say "installing triton"
        "${pip[@]}" install triton
    fi
else
    say "not Linux: skipping triton"
fi

# 4. nlc itself, editable. Skipped when pyproject.toml, setup.py and the requested extras are unchanged
#    since the last successful install and the package still imports.
extras=""
if [ "$with_tests" = 1 ]; then
    extras="[test,hf]"     # hf: transformers, so that the tests load an exported model as a user would
fi
stamp="$VENV/.nlc-setup-stamp"
digest="$(cat pyproject.toml setup.py | "$py" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
read -r have_digest have_extras 2>/dev/null < "$stamp" || true
# Finds (without running) the subpackages from outside the checkout: true once nlc is installed.
installed='import importlib.util as u, sys; sys.exit(not all(u.find_spec("nldsl." + n) for n in ("grammar", "codegen", "runtime")))'
up_to_date=0
if [ "${have_digest:-}" = "$digest" ] && { [ -z "$extras" ] || [ "${have_extras:-}" = "$extras" ]; } \
        && [ -x "$VENV/bin/nlc" ] \
        && "$py" -I -c "$installed" >/dev/null 2>&1; then
    up_to_date=1
fi
if [ "$up_to_date" = 0 ]; then
    say "installing nlc (editable)${extras:+ with extras $extras}"
    "${pip[@]}" install -e ".$extras"
    # Remember the widest set of extras installed for these packaging files.
    if [ -z "$extras" ] && [ "${have_digest:-}" = "$digest" ]; then
        extras="${have_extras:-}"
    fi
    printf '%s %s\n' "$digest" "$extras" > "$stamp"
fi

# 4b. With the tests, the peer the Titans benchmark compares against (the titans extra), so that its
#     harness runs end to end in them: best effort, and never in place of the torch already installed
#     (titans-pytorch needs torch >= 2.8); without it that test is skipped.
if [ "$with_tests" = 1 ] && ! "$py" -c 'import titans_pytorch' >/dev/null 2>&1; then
    say "installing the titans extra (titans-pytorch)"
    keep_torch="$(mktemp)"
    "$py" -c 'import torch; print("torch==" + torch.__version__)' > "$keep_torch"
    "${pip[@]}" install -c "$keep_torch" -e ".[titans]" \
        || say "warning: titans-pytorch does not install beside this torch; the Titans benchmark test is skipped"
    rm -f "$keep_torch"
fi

# 5. What the rendering tests drive, where it is missing: Debian's chromium (the browser tests) and
#    graphviz (`dot` reads the DOT output back), and a pinned Mermaid from the npm registry (the browser
#    renders the Mermaid output). Without them those tests are skipped.
install_debian() {  # packages...
    if ! command -v apt-get >/dev/null 2>&1; then
        say "warning: no apt-get; install $* yourself or the tests that use them are skipped"
        return 0
    fi
    local sudo_cmd=()
    if [ "$(id -u)" != 0 ]; then
        if ! command -v sudo >/dev/null 2>&1; then
            say "warning: not root and no sudo; cannot install $*, the tests that use them are skipped"
            return 0
        fi
        sudo_cmd=(sudo)
    fi
    say "installing $* (apt-get)"
    ${sudo_cmd[@]+"${sudo_cmd[@]}"} apt-get update
    ${sudo_cmd[@]+"${sudo_cmd[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
}
MERMAID_VERSION="11.17.2"
MERMAID_JS="$VENV/share/mermaid-$MERMAID_VERSION.min.js"
fetch_mermaid() {
    if ! command -v npm >/dev/null 2>&1; then
        say "warning: no npm; the Mermaid rendering test is skipped"
        return 0
    fi
    say "fetching mermaid $MERMAID_VERSION (npm registry)"
    local work
    work="$(mktemp -d)"
    if (cd "$work" && npm pack --silent "mermaid@$MERMAID_VERSION" >/dev/null \
            && tar -xzf mermaid-*.tgz package/dist/mermaid.min.js); then
        mkdir -p "$(dirname "$MERMAID_JS")" && mv "$work/package/dist/mermaid.min.js" "$MERMAID_JS"
    else
        say "warning: could not fetch mermaid; the Mermaid rendering test is skipped"
    fi
    rm -rf "$work"
}
if [ "$with_tests" = 1 ]; then
    missing=()
    [ -x /usr/bin/chromium ] || command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v dot >/dev/null 2>&1 || missing+=(graphviz)
    if [ "${#missing[@]}" -gt 0 ]; then
        install_debian "${missing[@]}"
    fi
    [ -f "$MERMAID_JS" ] || fetch_mermaid
fi

say "ready: $VENV"
