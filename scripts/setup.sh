#!/usr/bin/env bash
# One-time (idempotent) set-up: a virtual environment in .venv with the package and its pinned dependencies.
# torch is installed first and pinned (torch==2.13.0, the CPU build): an unpinned torch pulls GBs of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."

# Cross compilers and emulators of the MCU targets (targets/*.toml): installed with apt-get when missing and running
# as root; a few `command -v` checks when present. Without them the MCU tests skip, saying why.
need=()
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need+=(gcc-arm-none-eabi)
command -v qemu-system-arm >/dev/null 2>&1 || need+=(qemu-system-arm)
command -v riscv64-unknown-elf-gcc >/dev/null 2>&1 || need+=(gcc-riscv64-unknown-elf)
command -v qemu-system-riscv32 >/dev/null 2>&1 || need+=(qemu-system-misc)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "setup: installing MCU toolchains and emulators: ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    else
        echo "setup: skipping MCU toolchains (${need[*]} missing; not root or no apt-get): MCU targets cannot" \
             "build and their tests will be skipped. Install as root: apt-get install --no-install-recommends" \
             "${need[*]}" >&2
    fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.mnv2-setup-stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip setuptools wheel
.venv/bin/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
echo "$want" > "$stamp"
echo "set-up done: $(.venv/bin/mnv2-codegen --version)"
