# minikvm-here.bash — run commands with no network and only the current
# directory (and below) readable and writable.  Source it from ~/.bashrc:
#
#     source /path/to/minikvm-here.bash
#
# here PROGRAM [ARG...]   run one static program in the sandbox
# here_on [APPLET...]     from now on, run these busybox applets (default:
#                         all but the shell builtins) sandboxed when typed
# here_off                back to normal

here() {
    if [ $# -eq 0 ]; then
        echo "usage: here PROGRAM [ARG...]" >&2
        return 2
    fi
    local program
    program=$(type -P -- "$1") || {
        echo "here: $1: command not found" >&2
        return 127
    }
    shift
    minikvm run --here -- "$program" "$@"
}

_here_aliases=()

here_on() {
    local busybox applet
    busybox=$(type -P busybox) || {
        echo "here_on: needs a static busybox (apt-get install busybox-static)" >&2
        return 1
    }
    shopt -s expand_aliases
    for applet in ${@:-$("$busybox" --list)}; do
        # the shell's own commands (cd, echo, test, ...) stay the shell's,
        # and so do shells: minikvm runs one program, never another one
        case $(type -t -- "$applet") in builtin|keyword|function) continue ;; esac
        case $applet in sh|ash|hush|bash|sandbox|here|su|sudo|login) continue ;; esac
        alias "$applet=here $busybox $applet"
        _here_aliases+=("$applet")
    done
    echo "here: ${#_here_aliases[@]} commands now run sandboxed (here_off to stop)" >&2
}

here_off() {
    local applet
    for applet in "${_here_aliases[@]}"; do
        unalias "$applet" 2>/dev/null
    done
    _here_aliases=()
}
