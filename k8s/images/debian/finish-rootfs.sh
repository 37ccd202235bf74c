#!/bin/sh
# Runs inside the debootstrapped rootfs (chroot) before it is imported as scaleshop/debian:
# makes it a container base and removes everything this machine left in it (mirror address,
# resolv.conf, hostname, logs, package lists). k8s/images/build.sh runs it; its text is part of
# the base image's input hash.
set -eu

# Leaner package installs in every image built on this base: no docs (copyright files stay),
# man pages, info or translations; no recommended packages.
cat >/etc/dpkg/dpkg.cfg.d/scaleshop-slim <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG
find /usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete
find /usr/share/doc -mindepth 1 -type d -empty -delete
rm -rf /usr/share/man/* /usr/share/info/* /usr/share/lintian/*
# Some packages (the JRE) register man pages with update-alternatives: its folders must exist.
mkdir -p /usr/share/man/man1 /usr/share/man/man7 /usr/share/man/man8
find /usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' >/etc/apt/apt.conf.d/99scaleshop-no-recommends

# Packages installed in an image build never start their service.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod 755 /usr/sbin/policy-rc.d

# Nothing of the machine that built it: no package source (images get their packages from
# the build context, see k8s/images/build.sh), no resolver, hostname or logs.
rm -f /etc/apt/sources.list /etc/apt/sources.list.d/* /etc/resolv.conf /etc/hostname
: >/etc/apt/sources.list
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb /var/cache/debconf/*-old \
       /var/lib/dpkg/*-old /var/log/* /tmp/* /var/tmp/* /root/.bash_history
mkdir -p /var/lib/apt/lists/partial
