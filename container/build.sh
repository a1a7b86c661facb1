#!/usr/bin/env bash
# Build the appliance image with podman from the frozen binary: FROM scratch, nothing pulled.
#
#   python3 build.py binary && container/build.sh [TAG]      (default tag: localhost/appliance:<version>)
#
# Environment: BINARY (default dist/appliance), PODMAN_BUILD_ARGS (extra `podman build` arguments).
# Exit status: 0 built; 2 no binary; 3 podman missing; anything else is podman's.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${BINARY:-dist/appliance}
if ! command -v podman >/dev/null; then
    echo "container/build.sh: podman is not installed (Debian: apt-get install podman runc)" >&2
    exit 3
fi
if [ ! -x "$binary" ]; then
    echo "container/build.sh: no frozen binary at $binary: run python3 build.py binary first" >&2
    exit 2
fi
version=$("$binary" version --json | sed -n 's/.*"appliance": "\([^"]*\)".*/\1/p')
tag=${1:-localhost/appliance:$version}

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root/tmp" "$root/etc/appliance" "$root/lib64" "$ctx/state/cache/appliance" "$ctx/state/lib/appliance"
chmod 1777 "$root/tmp"
# The kernel cache is keyed on the build id inside the binary, so a cache warmed with dist/appliance on the
# host also serves the image's copy; -p keeps the build's mtime for people reading `ls -l`.
cp -p "$binary" "$root/appliance"
# The documented reference config as the default (a runtime self-test on synthetic events); a deployment
# mounts its own over it (the Kubernetes ConfigMap does).
cp config/appliance.toml "$root/etc/appliance/appliance.toml"

# The bundle carries its Python libraries but not the C library, and the onefile bootloader itself links a
# few system libraries (zlib): copy those from the build host into the image. glibc is copied whole (the
# libc6 package's shared objects) because Python dlopens parts of it (libnss, libresolv) that ldd cannot see.
libs=$(ldd "$binary" | awk '/=>/ {print $3} /ld-linux/ {print $1}')
if command -v dpkg >/dev/null && dpkg -L libc6 >/dev/null 2>&1; then
    libs="$libs $(dpkg -L libc6 | grep -E '/(lib|ld-linux)[^/]*\.so(\.[0-9]+)*$' || true)"
fi
for f in $libs; do
    [ -e "$f" ] || continue
    real=$(readlink -f "$f")
    dest="$root$(dirname "$real")"
    mkdir -p "$dest"
    cp -pL "$real" "$dest/"
    # Keep the name the loader asks for (libc.so.6 and friends are often symlinks to versioned files).
    [ "$(basename "$f")" = "$(basename "$real")" ] || ln -sf "$(basename "$real")" "$dest/$(basename "$f")"
done
loader=$(readlink -f /lib64/ld-linux-x86-64.so.2)
cp -pL "$loader" "$root/lib64/ld-linux-x86-64.so.2"
[ -f /etc/ld.so.cache ] && cp -p /etc/ld.so.cache "$root/etc/"
# A name for uid 65532 (and root), so nothing that asks for the user's name fails.
printf 'root:x:0:0:root:/root:/sbin/nologin\nappliance:x:65532:65532:trading appliance:/nonexistent:/sbin/nologin\n' \
    > "$root/etc/passwd"
printf 'root:x:0:\nappliance:x:65532:\n' > "$root/etc/group"

podman build ${PODMAN_BUILD_ARGS:-} -f container/Containerfile -t "$tag" "$ctx"
echo "container/build.sh: built $tag ($(du -sh "$ctx" | cut -f1) staged)"
