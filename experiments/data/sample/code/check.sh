#!/bin/sh
# Byte-compile every module, run its doctests, then the unit tests.
# Usage: sh check.sh   (from this directory)
set -eu

cd "$(dirname "$0")"
failed=0
for file in *.py; do
    if ! python3 -m py_compile "$file"; then
        echo "compile error: $file" >&2
        failed=1
        continue
    fi
    case "$file" in
        test_*) ;;
        *) python3 -m doctest "$file" || { echo "doctest failed: $file" >&2; failed=1; } ;;
    esac
done
python3 -m unittest -q test_tools || failed=1
rm -rf __pycache__
if [ "$failed" -eq 0 ]; then
    echo "all checks passed"
fi
exit "$failed"
