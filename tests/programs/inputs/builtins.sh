# POSIX sh (busybox ash) with builtins only: ash runs echo, printf, test,
# read and friends itself, so nothing here forks.
set -u
add() { echo $(( $1 + $2 )); }
count=0
for word in alpha beta gamma delta; do
    case $word in
        *a) count=$((count + 1)) ;;
    esac
done
echo "words ending in a: $count"
add 40 2
i=0; while [ $i -lt 5 ]; do i=$((i + 1)); [ $((i % 2)) -eq 0 ] && continue; printf '%d ' $i; done; echo
x=/usr/lib/libc.so.6; echo "${x##*/} ${x%/*} ${x#/usr} ${#x}"
echo "${UNSET_VAR:-default} ${UNSET_VAR:+alt}"
printf '%s|%5s|%-5s|%03d|%x\n' a b c 7 255
exec 4> sh-out.txt; echo "first line" >&4; printf 'second %s\n' line >&4; exec 4>&-
while IFS= read -r line; do echo "read: $line"; done < sh-out.txt
read -r a b rest <<EOT
one two three four
EOT
echo "a=$a b=$b rest=$rest"
set -- x y z; echo "$# $2 $*"; shift; echo "$@"
test -f sh-out.txt && echo "is a file"; [ -d . ] && echo "dot is a dir"
[ "abc" \< "abd" ] && echo "string compare"
umask 077; umask
echo "to stderr" 1>&2
f() { return 7; }; f; echo "status $?"
trap 'echo "trap on exit"' EXIT
exit 5
