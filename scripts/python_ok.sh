#!/bin/sh
# Which Python builds .venv, and whether the one in .venv still does.
#
#   scripts/python_ok.sh venv DIR     prints "ok" if DIR/bin/python runs and is 3.11 or newer;
#                                     removes DIR (saying why) if its Python is older or broken
#   scripts/python_ok.sh find [PY...] prints the first of PY... (default: python3.13 python3.12
#                                     python3.11 python3) that is Python 3.11 or newer
#
# Kept to POSIX sh and `--version`, so it runs before any Python is known to work.

# True when the interpreter $1 runs and says it is Python 3.11 or newer.
new_enough() {
    version=$("$1" --version 2>&1) || return 1
    case $version in
        "Python 3."*) ;;
        *) return 1 ;;
    esac
    minor=${version#Python 3.}
    minor=${minor%%.*}
    case $minor in
        '' | *[!0-9]*) return 1 ;;
    esac
    [ "$minor" -ge 11 ]
}

case $1 in
venv)
    dir=$2
    [ -e "$dir" ] || exit 0
    if new_enough "$dir/bin/python"; then
        echo ok
        exit 0
    fi
    found=$("$dir/bin/python" --version 2>/dev/null | head -n 1)
    case $found in
        "Python "*) ;;
        *) found="a Python that no longer runs" ;;
    esac
    echo "$dir was made by $found; Kontext Bot needs 3.11 or newer: rebuilding it" >&2
    rm -rf "$dir"
    ;;
find)
    shift
    [ $# -gt 0 ] || set -- python3.13 python3.12 python3.11 python3
    for candidate in "$@"; do
        if command -v "$candidate" >/dev/null 2>&1 && new_enough "$candidate"; then
            command -v "$candidate"
            exit 0
        fi
    done
    exit 1
    ;;
*)
    echo "usage: $0 venv DIR | find [PYTHON...]" >&2
    exit 2
    ;;
esac
