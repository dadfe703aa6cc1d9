# zsh's own file builtins (the zsh/files, zsh/stat and zsh/datetime modules):
# mkdir, ln, mv, chmod, rm and stat without a second process.
zmodload zsh/files zsh/stat zsh/datetime zsh/parameter
mkdir -p zd/one/two && print made
print content > zd/one/f.txt
ln zd/one/f.txt zd/one/hard.txt && ln -s f.txt zd/one/soft.txt && print linked
mv zd/one/hard.txt zd/moved.txt && print moved
chmod 600 zd/moved.txt && print chmodded
zstat -H st zd/moved.txt && print "size=$st[size] mode=$st[mode] nlink=$st[nlink]"
zstat -L +link zd/one/soft.txt
zstat +mode zd/one
strftime '%Y-%m-%d' 86400
print ${#commands[@]} > /dev/null
print ${(k)builtins[(r)zstat]}
rm -r zd/one/two && print removed-dir
rm zd/one/soft.txt zd/moved.txt && print removed
rmdir zd/one 2>&1; print "rmdir status $?"
rm -rf zd && print cleaned
[[ -e zd ]] || print gone
print $EPOCHSECONDS > /dev/null; print ${epochtime[1]} > /dev/null; print epoch ok
