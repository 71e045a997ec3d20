# Sourced by the other scripts: installs what a fresh Debian machine with only the Rust
# toolchain lacks, and picks the shared build directory.
set -euo pipefail

# RocksDB's bindings are generated with bindgen, which needs libclang.
have_libclang() {
    ls /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1
}
if ! have_libclang; then
    echo "borg: installing libclang (needed to build RocksDB's bindings) ..." >&2
    sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq libclang-dev clang >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "borg: cargo not found; install the Rust toolchain (https://rustup.rs) first" >&2
    exit 1
fi

# One build directory outside the checkout, reused by every clone on this machine: a clean
# build of RocksDB takes many minutes on two cores, and it is the same for every checkout.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/borg-target}"
mkdir -p "$CARGO_TARGET_DIR"
