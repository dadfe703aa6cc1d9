# zsh with builtins only (run as zsh -f: no start-up files).
setopt extendedglob
typeset -A h; h=(b 2 a 1 c 3); for k in ${(ok)h}; do print -n "$k=$h[$k] "; done; print
arr=(pear apple fig); print -l ${(o)arr}; print ${#arr} ${arr[2]} ${(U)arr[1]} ${arr[-1]}
s="Hello World"; print ${s:l} ${(s: :)s[2]} ${(j:,:)${(s::)s[1,5]}}
float f=3.25; print $(( f * 2 )); integer i=7; (( i **= 2 )); print $i
repeat 3 print -n x; print
fn() { print "args=$# first=$1"; return 4 }; fn q w e; print "status $?"
print -n "to file" > zsh-out.txt; print >> zsh-out.txt; print line two >> zsh-out.txt
read -r l < zsh-out.txt; print "[$l]"
lines=("${(@f)$(<zsh-out.txt)}") 2>/dev/null; print ${#lines}
files=(*.txt(N)); print $#files $files
printf '%-6s|%6.2f|%d\n' ab 3.14159 0x1f
[[ "abc123" == [a-z]##[0-9]## ]] && print globmatch
n=42 t=ab; print "${(l:8::0:)n} ${(r:6::.:)t}|"
print -r -- ${${:-nested}:u} ${#${:-count me}}
() { print anonymous function $1 } arg
here=$PWD; cd .. && cd ~- && [[ $PWD == $here && $OLDPWD == ${here:h} ]] && print cd up and back
print -u2 to stderr
