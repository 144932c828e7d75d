#!/usr/bin/env bash
# The base image every Fathom image starts FROM, built from Debian packages alone: no image registry
# is needed (none is reachable on the build machines). debootstrap writes a minimal Debian bookworm
# root file system, `docker import` turns it into an image. Skipped when the image already exists
# (FORCE=1 rebuilds it).
#
#   docker/build-base.sh                 # -> fathom/debian:bookworm
#   BASE_IMAGE=my/debian:bookworm MIRROR=http://mirror.example/debian docker/build-base.sh
set -euo pipefail

BASE_IMAGE=${BASE_IMAGE:-fathom/debian:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
DOCKER=${DOCKER:-docker}
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)

if [ "${FORCE:-0}" != 1 ] && $DOCKER image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    echo "base image $BASE_IMAGE exists (FORCE=1 to rebuild)"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq debootstrap
fi

root=$(mktemp -d /tmp/fathom-rootfs.XXXXXX)
trap '$SUDO rm -rf "$root"' EXIT
started=$(date +%s)
# ca-certificates: pip and apt over HTTPS inside later builds; nothing else beyond minbase.
$SUDO debootstrap --variant=minbase --include=ca-certificates bookworm "$root" "$MIRROR"

# The same trimming the official debian:*-slim images do: no man pages, docs or translations from
# any later `apt-get install`, no recommended packages, no apt caches left in layers.
$SUDO tee "$root/etc/dpkg/dpkg.cfg.d/01-fathom-slim" >/dev/null <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
$SUDO tee "$root/etc/apt/apt.conf.d/01-fathom-slim" >/dev/null <<'EOF'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
$SUDO tee "$root/etc/apt/sources.list" >/dev/null <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb $SECURITY_MIRROR bookworm-security main
EOF
$SUDO rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* \
    "$root"/var/cache/debconf/*-old "$root"/var/log/*.log "$root"/var/log/apt/*
# The container's /etc/resolv.conf and /etc/hostname are the engine's; the build host's do not belong.
$SUDO rm -f "$root/etc/resolv.conf" "$root/etc/hostname"

$SUDO tar --numeric-owner -C "$root" -c . | $DOCKER import \
    -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    -c 'CMD ["bash"]' \
    -m "debootstrap --variant=minbase bookworm from $MIRROR" - "$BASE_IMAGE" >/dev/null
echo "built $BASE_IMAGE in $(( $(date +%s) - started )) s: $($DOCKER image inspect -f '{{.Size}}' "$BASE_IMAGE" | numfmt --to=iec)"
