# bash with builtins only: no command here forks (a pipeline, $(...), a
# subshell or an external command would, and minikvm refuses fork).
set -u
greet() { local who=$1; printf 'hello, %s\n' "$who"; return 2; }
greet world; echo "status $?"
while read -r h; do echo "$h"; done <<END
heredoc $((6*7)) ${HOME:-none} $# args: $*
END
read -r line <<< "here string"
echo "$line"
arr=(3 1 2); IFS=$'\n'; echo "${arr[*]}"; unset IFS
sum=0; for n in "${arr[@]}"; do (( sum += n )); done; echo "sum=$sum"
for ((i = 0; i < 5; i++)); do echo -n "$i"; done; echo
declare -A colour=([apple]=red [banana]=yellow); echo "${colour[banana]} ${#colour[@]}"
declare -p arr
case "abc" in a*) echo starts-a;; *) echo other;; esac
x=hello_world; echo "${x//o/0} ${x#*_} ${x%_*} ${x^^} ${x:1:4} ${#x}"
[[ $x =~ ^hel+o_(w.*)$ ]] && echo "regex ${BASH_REMATCH[1]}"
printf -v hex '%x' 48879; echo "$hex $(( 16#ff + 2**40 ))"
IFS=, read -ra parts <<< "a,b,c"; echo "${parts[2]} ${#parts[@]}"
exec 3> fd3.txt; echo to-fd3 >&3; echo more >&3; exec 3>&-
while IFS= read -r l; do echo "[$l]"; done < fd3.txt
mapfile -t lines < fd3.txt; echo "mapfile ${#lines[@]} ${lines[1]}"
echo appended >> fd3.txt
[[ -f fd3.txt && -s fd3.txt && ! -d fd3.txt ]] && echo "file tests"
[[ -e no-such-file ]] || echo "no such file"
umask 027; umask; umask -S
here=$PWD; cd .. && cd "$here" && [[ $PWD == "$here" && $OLDPWD == "${here%/*}" ]] && echo "cd up and back"
type echo greet
shopt -s nullglob; files=(*.txt); echo "${#files[@]} ${files[*]}"
echo "to stderr" >&2
trap 'echo "exit trap, status $?"' EXIT
set -e
false || echo "false handled"
(( 1 + 1 == 2 ))
exit 3
