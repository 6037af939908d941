#!/usr/bin/env bash
# Builds the `runnel:dev` image (or the tag given as $1) from binaries built here, with
# no base image: see Dockerfile. Needs cargo and a Docker engine.
#
#   deploy/docker/build.sh            # runnel:dev
#   deploy/docker/build.sh runnel:0.1 # another tag
set -euo pipefail
cd "$(dirname "$0")/../.."
tag="${1:-runnel:dev}"
target_dir="${CARGO_TARGET_DIR:-target}"

cargo build --release --locked -p runnel-server -p runnel-cli
root="deploy/docker/rootfs"
rm -rf "$root"
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/data" "$root/tmp"
cp "$target_dir/release/runneld" "$target_dir/release/runnel" "$root/usr/local/bin/"

# The shared libraries the binaries link, and the NSS modules glibc loads at run time to
# resolve peer names (files for /etc/hosts, dns for the resolver).
libs=$( { ldd "$target_dir/release/runneld"; ldd "$target_dir/release/runnel"; } \
        | awk '/=>/ { print $3 } /^\s*\/lib/ { print $1 }' | sort -u)
nss=$(ls /lib/x86_64-linux-gnu/libnss_{files,dns}.so.2 /lib/x86_64-linux-gnu/libresolv.so.2 2>/dev/null || true)
for lib in $libs $nss; do
    [ -e "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
# The dynamic loader is also reached through /lib64 on x86_64.
if [ -e /lib64/ld-linux-x86-64.so.2 ]; then
    mkdir -p "$root/lib64"
    cp -L /lib64/ld-linux-x86-64.so.2 "$root/lib64/"
fi

cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/sbin/nologin
runnel:x:10001:10001:runnel:/data:/sbin/nologin
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
runnel:x:10001:
GROUP
echo "hosts: files dns" > "$root/etc/nsswitch.conf"
# Owned by the runtime user so a fresh volume is writable; run as root only to build.
chown -R 10001:10001 "$root/data" "$root/tmp" 2>/dev/null || true
chmod 1777 "$root/tmp"

docker build -t "$tag" deploy/docker
echo "built $tag ($(docker image inspect "$tag" --format '{{.Size}}') bytes)"
