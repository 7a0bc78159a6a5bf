#!/usr/bin/env bash
# System packages for integration tests, installed non-interactively (Debian/Ubuntu; best effort, needs root or
# sudo; idempotent: what is there already is skipped): an OpenSSH server + client for the remote-benchmark tests
# (tests/test_bench.py starts its own sshd on 127.0.0.1 with throwaway keys, one of them with no sftp subsystem; it
# never touches the system's sshd service), and QEMU user-mode emulation + mmdebstrap for the emulated aarch64 run
# (tests/test_emulate.py; a few MB of packages, no binfmt_misc needed: edgekd runs QEMU directly). The emulated
# root itself (338 MB) is built by the test, once per cache, from the Debian mirror and PyPI (27-66 s measured on a
# 2-core host with a fast mirror, longer on a slow one): CI that cannot afford it sets EDGEKD_SKIP_EMULATION=reason
# and the test says so.
# Chromium (the report.html render check) is large and only used by hand, so it is not installed here.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null 2>&1 && command -v scp >/dev/null 2>&1 || need+=(openssh-client)
command -v qemu-aarch64-static >/dev/null 2>&1 || command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user-static)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
[ -e /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)  # Ubuntu runners
if [ ${#need[@]} -eq 0 ]; then echo "system deps: already installed"; exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then echo "system deps: no apt-get here; install ${need[*]} yourself"; exit 1; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "system deps: not root and no passwordless sudo; install ${need[*]} yourself"; exit 1; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# A temporary policy-rc.d keeps the package from starting (or failing to start) a system sshd in containers.
made_policy=0
if [ ! -e /usr/sbin/policy-rc.d ]; then
  $SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d' && made_policy=1
fi
status=0
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" || status=$?
if [ "$made_policy" -eq 1 ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
[ "$status" -eq 0 ] || { echo "system deps: apt-get install ${need[*]} failed"; exit "$status"; }
echo "system deps: installed ${need[*]}"
