#!/usr/bin/env bash
# Debian tools the tests and the bench drive for real: restic and borg (bench peers), libnbd-bin
# (nbdcopy, nbdinfo, nbdfuse), nbdkit, qemu-utils (qemu-img, qemu-io), fuse3, fuse2fs and e2fsprogs
# (mkfs.ext4, e2fsck) for the NBD and filesystem tests.
# Installs only what is missing, so a machine that has them is not touched.
set -euo pipefail
need=()
for pair in restic:restic borg:borgbackup nbdcopy:libnbd-bin nbdkit:nbdkit qemu-img:qemu-utils fusermount3:fuse3 fuse2fs:fuse2fs mkfs.ext4:e2fsprogs; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
