# mksh (the MirBSD Korn shell) with builtins only.  Its here-documents are
# temporary files in $TMPDIR; printf is not one of its builtins.
typeset -i n=0; for w in a b c d; do (( n += 1 )); done; print "n=$n"
set -A arr zero one two; print ${#arr[*]} ${arr[1]} ${arr[*]}
s=hello_world; print ${s%_*} ${s#*_} ${#s} ${s/o/0} ${s//o/0}
typeset -u up=shout; typeset -L4 left=abcdefg; typeset -Z5 zeros=42; print $up $left $zeros
function f { print "f got $# args: $*"; return 3; }; f x y; print "status $?"
print -r -- "$(( 7 * 6 )) $(( 1 << 10 )) $(( 17 % 5 )) $(( 2#1010 ))"
print "to file" > ksh-out.txt; print "second" >> ksh-out.txt
while read -r line; do print "[$line]"; done < ksh-out.txt
while read -r a b; do print "$b-$a"; done <<-EOT
	1 one
	2 two
	EOT
case $s in hello*) print "case matched";; esac
[[ abc == a* && -f ksh-out.txt && ! -d ksh-out.txt ]] && print "tests pass"
x=; for i in 1 2 3; do x=$x$i; done; print "x=$x"
print -n "no newline "; print -R "raw -n"
print -u2 to stderr
exit 4
