#!/usr/bin/env bash
# run_packaging.sh: pip install into a fresh venv, pkg-config from a meson install, and the out-of-tree template, for one Python.
# usage: run_packaging.sh PYTHON INSTALL_PREFIX WORKDIR   (prints "PASS x" / "FAIL x" lines)
set -u
PY=$1 PREFIX=$2 WORK=$3
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
rm -rf "$WORK" && mkdir -p "$WORK"
pass() { echo "PASS $1"; }
fail() { echo "FAIL $1"; }
step() { # name, command...
  local name=$1; shift
  if "$@" >"$WORK/$name.log" 2>&1; then pass "$name"; else fail "$name"; sed 's/^/    /' "$WORK/$name.log" | tail -25; fi
}

# 1. pip install . into a fresh virtual environment (Debian's meson-python, no index).
step venv "$PY" -m venv --system-site-packages "$WORK/venv"
VPY=$WORK/venv/bin/python
step pip_install "$VPY" -m pip install --no-build-isolation --no-index --no-cache-dir "$ROOT"
smoke() {
  cd "$WORK" && "$VPY" - <<'PY'
import os, coextra
import sys
assert coextra.__file__.startswith(sys.prefix) and "site-packages" in coextra.__file__, coextra.__file__  # the venv's copy, not the source tree
assert os.path.exists(os.path.join(coextra.get_include(), "coextra", "coextra.h"))
s = coextra.Slot("smoke")
def f(): return 1
s[f.__code__] = 1
seen = []
with coextra.add_hook("smoke", on_enter=lambda c: seen.append(c.co_name), only=s):
    f()
assert seen == ["f"], seen
assert not coextra.status().installed
from importlib.metadata import version  # the wheel's version: dynamic, from meson.build as __version__ is
assert version("coextra") == coextra.__version__, (version("coextra"), coextra.__version__)
print("installed coextra", coextra.__version__, "at", coextra.__file__)
PY
}
ROOT=$ROOT step import_outside_tree smoke

# 2. pkg-config from the meson install make.py did (system_install=true).
PCDIR=$(dirname "$(find "$PREFIX" -name coextra.pc | head -n1)")
pc_cflags() { PKG_CONFIG_PATH=$PCDIR pkg-config --cflags coextra | grep -q -- "-I$PREFIX/include" &&
              test -f "$PREFIX/include/coextra/coextra.h" && test -f "$PREFIX/include/coextra/coextra.hpp"; }
step pkgconfig_cflags pc_cflags

# 3. The consumer template, out of tree, both ways.
cp -r "$ROOT/examples/consumer_template" "$WORK/template"
step template_pip_install "$VPY" -m pip install --no-build-isolation --no-index --no-cache-dir "$WORK/template"
template_smoke() { cd "$WORK" && "$VPY" "$WORK/template/smoke_test.py"; }
step template_pip_run template_smoke
template_pc() {
  cd "$WORK/template" && PKG_CONFIG_PATH=$PCDIR meson setup "$WORK/tb" -Dcoextra_from=pkgconfig \
      -Dpython.install_env=auto --native-file <(printf "[binaries]\npython = '%s'\n" "$VPY") &&
  grep -q "$PREFIX/include" "$WORK/tb/build.ninja" && meson compile -C "$WORK/tb" &&
  cd "$WORK" && PYTHONPATH=$WORK/tb "$VPY" -c "import calltally, sys; print(calltally.__file__); assert calltally.__file__.startswith('$WORK/tb')" &&
  PYTHONPATH=$WORK/tb "$VPY" "$WORK/template/smoke_test.py"
}
step template_pkgconfig template_pc
