#!/usr/bin/env bash
# Installs the Debian packages coextra's build and tests need, once; idempotent.
set -euo pipefail

need_pkgs=(ninja-build g++ pkg-config doctest-dev
           valgrind python3-mesonpy python3-venv libclang-rt-14-dev clang)

have_meson() {
  # Debian 12's meson 1.0.1 cannot introspect Python 3.12+ (distutils); we need >= 1.2.
  command -v meson >/dev/null 2>&1 || return 1
  local v; v=$(meson --version 2>/dev/null) || return 1
  [ "$(printf '%s\n1.2.0\n' "$v" | sort -V | head -n1)" = "1.2.0" ]
}

# CPython's own test package for Debian's python3 (the CPython-suite run needs it).
if [ -x /usr/bin/python3 ]; then
  need_pkgs+=("libpython$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')-testsuite")
fi

missing=()
for p in "${need_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ] && have_meson; then
  exit 0
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# Add bookworm-backports beside bookworm in the existing Debian source (same URI/components).
src=/etc/apt/sources.list.d/debian.sources
if [ -f "$src" ] && ! grep -q bookworm-backports "$src"; then
  $SUDO sed -i -E '/^URIs: .*\/debian$/,/^Suites:/ s/^(Suites: bookworm)( |$)/\1 bookworm-backports\2/' "$src"
fi
if [ ! -f "$src" ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # One-line format: the same mirror as the existing bookworm entry.
  mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
  [ -n "$mirror" ] || { echo "setup-deps: no bookworm entry in apt's sources to add bookworm-backports beside" >&2; exit 1; }
  echo "deb $mirror bookworm-backports main" | $SUDO tee /etc/apt/sources.list.d/backports.list >/dev/null
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! have_meson; then
  $SUDO apt-get install -y -qq -t bookworm-backports meson >/dev/null
fi
have_meson || { echo "setup-deps: meson >= 1.2 could not be installed" >&2; exit 1; }
echo "setup-deps: meson $(meson --version), packages ok"
