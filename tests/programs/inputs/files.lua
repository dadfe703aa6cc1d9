-- The io and os libraries: files in the working directory, the clock,
-- the environment, and what happens when a call is not allowed.
local out = assert(io.open("lua-out.txt", "w"))
for i = 1, 5 do out:write(string.format("line %d\n", i)) end
out:write(string.rep("x", 10000), "\n")
out:close()

local file = assert(io.open("lua-out.txt", "r"))
print("first", file:read("l"))
print("number", file:read("n"))
print("seek", file:seek("set", 7), file:read(6))
print("size", file:seek("end"))
file:close()

local n = 0
for line in io.lines("lua-out.txt") do n = n + 1 end
print("lines", n)

local appended = assert(io.open("lua-out.txt", "a"))
appended:write("appended\n")
appended:close()
print("renamed", os.rename("lua-out.txt", "lua-renamed.txt"))
print("missing", io.open("no-such-file.txt"))
print("removed", os.remove("lua-renamed.txt"))
print("removed again", os.remove("lua-renamed.txt"))

print("date", os.date("!%Y-%m-%d %H:%M:%S", 86400 * 365))
print("time", os.time({year = 2020, month = 1, day = 1, hour = 12}) > 0)
print("clock", os.clock() >= 0)
print("getenv", os.getenv("LUA_TEST_VALUE"), os.getenv("NO_SUCH_VARIABLE"))
io.stderr:write("to stderr\n")
io.write("no newline")
