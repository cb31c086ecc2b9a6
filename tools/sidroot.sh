#!/usr/bin/env bash
# sidroot.sh: makes (once) and enters a Debian sid root holding CPython 3.13, 3.14, 3.14d and 3.15 for the test matrix.
#
#   tools/sidroot.sh ensure            create the root if missing, install what is missing in it
#   tools/sidroot.sh path              print the root's directory
#   tools/sidroot.sh run [-C DIR] CMD  run CMD inside the root (cwd DIR, default the current one)
#
# Why a root: Debian sid's python3.14/3.15 binaries need sid's libc (2.38+),
# newer than this Debian 12 host's.  The root lives OUTSIDE the repository
# (default /var/cache/coextra/sid-root, or $COEXTRA_SID_ROOT) and is reused
# when present.  Each `run` enters it in a private mount namespace
# (unshare -m) with /proc, /dev and the checkout bind-mounted at the SAME
# absolute path as outside, so every path make.py computes is valid on both
# sides and nothing stays mounted afterwards.  Needs root (as CI runs).
#
# The Debian mirror is the one apt on this machine already uses: read from
# its sources, never written here.  sid's Release file may be past its
# Valid-Until date on the mirror, hence -o Acquire::Check-Valid-Until=false.
set -euo pipefail

ROOTFS=${COEXTRA_SID_ROOT:-/var/cache/coextra/sid-root}
REPO=$(cd "$(dirname "$0")/.." && pwd)

# The interpreters of the matrix and what the suites need beside them.
PKGS_BASE="python3.13-dev python3.14-dev python3.14-dbg python3.15-dev
  libpython3.13-testsuite libpython3.14-testsuite libpython3.15-testsuite
  g++ meson ninja-build pkg-config doctest-dev
  python3-mesonpy python3-venv valgrind"
# The real tools that tests/real_tools runs next to coextra (make.py's "tools"
# suite): Dynamo (torch.compile), coverage.py, line_profiler, yappi and
# pyinstrument, as sid packages them.  A list of their own because only that
# suite needs them, and they are most of the root's size (python3-torch and
# its libraries: about 1 GB).  Which Pythons each one ships for is sid's
# business (torch: 3.14 only); the suite reads it from the installed files.
PKGS_TOOLS="python3-torch python3-coverage python3-line-profiler python3-yappi python3-pyinstrument"
# Extra packages (space-separated) for suites that need them.
PKGS_EXTRA=${COEXTRA_SID_EXTRA_PKGS:-}

APT_OPTS=(-o Acquire::Check-Valid-Until=false -o APT::Install-Recommends=false -o Dpkg::Use-Pty=0 -qq)

die() { echo "sidroot: $*" >&2; exit 1; }

mirror() {
  # First Debian archive URI of apt's sources: deb822 (URIs: .../debian) or one-line format.
  local m=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    m=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }' \
        /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$m" ]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\/.*\/debian\/?$/) { print $i; exit } }')
  fi
  [ -n "$m" ] || die "no Debian mirror found in apt's sources"
  echo "${m%/}"
}

# Run a command inside $1 (a root) in a private mount namespace.
enter() {
  local r=$1 cwd=$2; shift 2
  [ "$(id -u)" -eq 0 ] || die "entering the sid root needs root (unshare -m, chroot)"
  mkdir -p "$r$REPO" "$r/proc" "$r/dev"
  # resolv.conf for apt inside; harmless for test runs.
  cp -L /etc/resolv.conf "$r/etc/resolv.conf" 2>/dev/null || true
  unshare -m -- /bin/sh -c '
    set -e
    r=$1; repo=$2; cwd=$3; shift 3
    mount --make-rprivate / 2>/dev/null || true
    mount --bind /proc "$r/proc"
    mount --rbind /dev "$r/dev"
    mount --bind "$repo" "$r$repo"
    exec chroot "$r" /usr/bin/env \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      /bin/sh -c "cd \"\$0\" && exec \"\$@\"" "$cwd" "$@"
  ' sh "$r" "$REPO" "$cwd" "$@"
}

missing_pkgs() { # packages of $@ not installed in the root
  local p
  for p in "$@"; do
    chroot "$ROOTFS" dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
  done
}

ensure() {
  [ "$(id -u)" -eq 0 ] || die "creating the sid root needs root"
  mkdir -p "$(dirname "$ROOTFS")"
  exec 9>"$ROOTFS.lock"
  flock 9
  if [ ! -x "$ROOTFS/usr/bin/python3.14" ]; then
    command -v debootstrap >/dev/null || {
      DEBIAN_FRONTEND=noninteractive apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
    }
    local m tmp t0
    m=$(mirror)
    tmp="$ROOTFS.partial"
    rm -rf "$tmp"
    t0=$(date +%s)
    echo "sidroot: creating $ROOTFS from $m (debootstrap sid, about 2 minutes)"
    # shellcheck disable=SC2086
    debootstrap --variant=minbase --include="$(echo $PKGS_BASE | tr ' ' ',')" sid "$tmp" "$m" \
      > "$ROOTFS.debootstrap.log" 2>&1 || { tail -n 30 "$ROOTFS.debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$ROOTFS"
    mv "$tmp" "$ROOTFS"
    echo "sidroot: created in $(( $(date +%s) - t0 )) s"
  fi
  # shellcheck disable=SC2086
  local want; want=$(missing_pkgs $PKGS_BASE $PKGS_TOOLS $PKGS_EXTRA)
  if [ -n "$want" ]; then
    echo "sidroot: installing into the root:" $want
    enter "$ROOTFS" / env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" update
    # shellcheck disable=SC2086
    enter "$ROOTFS" / env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" -y install $want >/dev/null
  fi
  local py
  for py in python3.13 python3.14 python3.14d python3.15; do
    [ -x "$ROOTFS/usr/bin/$py" ] || die "$py missing in $ROOTFS after set-up"
  done
}

cmd=${1:-}; shift || true
case "$cmd" in
  ensure) ensure ;;
  path) echo "$ROOTFS" ;;
  run)
    cwd=$PWD
    if [ "${1:-}" = "-C" ]; then cwd=$2; shift 2; fi
    [ $# -gt 0 ] || die "run: no command"
    [ -x "$ROOTFS/bin/sh" ] || die "no sid root at $ROOTFS (tools/sidroot.sh ensure makes it)"
    enter "$ROOTFS" "$cwd" "$@"
    ;;
  *) die "usage: sidroot.sh ensure | path | run [-C DIR] CMD..." ;;
esac
