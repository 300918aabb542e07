#!/usr/bin/env bash
# Debian packages the test suite needs, installed only when missing (idempotent):
#   chromium       renders the HTML reconciliation report headless (no network)
#   poppler-utils  pdftotext/pdftoppm read back PDF receipts
#   fonts-noto-cjk a CJK font for PDF receipts (no download at run time)
#   faketime       steps a process's wall clock (the reliability suite's clock-step run)
# With the argument `demo` (make demo): only what the demo needs, the CJK font.
set -euo pipefail
want=()
if [ "${1:-}" != "demo" ]; then
    command -v chromium >/dev/null 2>&1 || want+=(chromium)
    command -v pdftotext >/dev/null 2>&1 || want+=(poppler-utils)
    command -v faketime >/dev/null 2>&1 || want+=(faketime)
fi
[ -n "$(ls /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc 2>/dev/null)" ] || want+=(fonts-noto-cjk)
if [ ${#want[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-system-deps: need root to install: ${want[*]} (tests that use them will fail)" >&2
    exit 0
fi
echo "install-system-deps: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
