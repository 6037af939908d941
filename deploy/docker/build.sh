#!/usr/bin/env bash
# Builds the Runnel image from binaries built here, with no base image (no registry is
# reachable where Runnel is built and tested): see Dockerfile. Needs a Docker engine, and
# cargo unless --bin-dir points at binaries that already exist.
#
#   deploy/docker/build.sh                          # cargo build --release; tag runnel:dev
#   deploy/docker/build.sh --tag runnel:0.1         # another tag (a bare `runnel:0.1` works too)
#   deploy/docker/build.sh --profile dev            # the debug build: far quicker to compile
#   deploy/docker/build.sh --bin-dir target/debug   # reuse runneld (and runnel) built there
#   deploy/docker/build.sh --label key=value        # an extra image label (repeatable)
#
# The binaries are copied with their debug sections stripped (a debug runneld is ~200 MB
# with them, ~30 MB without), so an image made from the test suite's debug build is quick
# to build and to start. The build context is a temporary directory, so two builds at
# once (two test runs) never share files.
set -euo pipefail

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
}

repo=$(cd "$(dirname "$0")/../.." && pwd)
tag="runnel:dev"
profile="release"
bin_dir=""
labels=()
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) tag="${2:?--tag needs a value}"; shift 2 ;;
        --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
        --bin-dir) bin_dir="${2:?--bin-dir needs a directory}"; shift 2 ;;
        --label) labels+=(--label "${2:?--label needs key=value}"); shift 2 ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "build.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) tag="$1"; shift ;;
    esac
done

if [ -z "$bin_dir" ]; then
    # cargo's `dev` profile writes to target/debug; every other profile to its own name.
    case "$profile" in
        dev | debug) profile="dev"; out="debug" ;;
        *) out="$profile" ;;
    esac
    (cd "$repo" && cargo build --locked --profile "$profile" -p runnel-server -p runnel-cli --bins)
    target_dir="${CARGO_TARGET_DIR:-target}"
    case "$target_dir" in /*) ;; *) target_dir="$repo/$target_dir" ;; esac
    bin_dir="$target_dir/$out"
    need_cli=1
else
    need_cli=0
fi

runneld="$bin_dir/runneld"
runnel="$bin_dir/runnel"
if [ ! -x "$runneld" ]; then
    echo "build.sh: no runneld at $runneld (build it with cargo build -p runnel-server, or drop --bin-dir)" >&2
    exit 1
fi
bins=("$runneld")
if [ -x "$runnel" ]; then
    bins+=("$runnel")
elif [ "$need_cli" = 1 ]; then
    echo "build.sh: cargo built no runnel CLI at $runnel" >&2
    exit 1
else
    echo "build.sh: no runnel CLI at $runnel; the image will hold runneld only" >&2
fi

ctx=$(mktemp -d "${TMPDIR:-/tmp}/runnel-image.XXXXXX")
trap 'rm -rf "$ctx"' EXIT
root="$ctx/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$ctx/data"
for bin in "${bins[@]}"; do
    strip --strip-debug -o "$root/usr/local/bin/$(basename "$bin")" "$bin"
done

# The shared libraries the binaries link (ldd prints `name => path` and, for the loader,
# a bare path), and the glibc NSS modules loaded at run time to resolve peer names
# (files for /etc/hosts, dns for Docker's resolver), found beside libc.
libs=$(for bin in "${bins[@]}"; do ldd "$bin"; done \
    | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u)
libc=$(printf '%s\n' $libs | grep '/libc\.so' | head -n1)
if [ -z "$libc" ]; then
    echo "build.sh: ldd shows no libc for ${bins[*]}" >&2
    exit 1
fi
libdir=$(dirname "$libc")
for lib in $libs "$libdir/libnss_files.so.2" "$libdir/libnss_dns.so.2" "$libdir/libresolv.so.2"; do
    [ -e "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done

cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/sbin/nologin
runnel:x:10001:10001:runnel:/data:/sbin/nologin
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
runnel:x:10001:
GROUP
echo "hosts: files dns" > "$root/etc/nsswitch.conf"
# /data is copied apart, owned by the runtime user (COPY makes everything else root's,
# which keeps the binaries read-only to it), so that a fresh volume, which Docker fills
# from the image's /data with its ownership, is writable by runneld.
chmod 0750 "$ctx/data"
chmod 1777 "$root/tmp"

cp "$repo/deploy/docker/Dockerfile" "$ctx/Dockerfile"
revision=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)
docker build --quiet --label "org.opencontainers.image.revision=$revision" "${labels[@]}" -t "$tag" "$ctx" >/dev/null
echo "built $tag from $bin_dir ($(docker image inspect "$tag" --format '{{.Size}}') bytes)"
