-- Strings, tables, math, closures and coroutines: the Lua interpreter's
-- own work, nothing but memory and stdout.
local words = {}
for word in ("the quick brown fox jumps over the lazy dog"):gmatch("%a+") do
  words[#words + 1] = word
end
table.sort(words, function(a, b) return #a < #b or (#a == #b and a < b) end)
print(table.concat(words, ","))

local counts = {}
for _, word in ipairs(words) do counts[word] = (counts[word] or 0) + 1 end
local keys = {}
for word in pairs(counts) do keys[#keys + 1] = word end
table.sort(keys)
for _, word in ipairs(keys) do io.write(word, "=", counts[word], " ") end
print()

print(string.format("%5.2f|%-6s|%x|%q", math.pi, "lua", 255, "tab\tquote\""))
print(("hello"):rep(3, "-"), ("Hello World"):upper(), ("abc"):byte(1, -1))
print(string.gsub("hello world", "o", "0"), ("x = 42"):match("(%w+) = (%d+)"))
print(math.floor(-3.5), math.ceil(-3.5), math.max(3, 9, 1), 7 // 2, 7 % 3, 2 ^ 10)
print(math.maxinteger, math.mininteger, 1 / 0, -1 / 0, math.tointeger(3.0))
print(utf8.char(72, 228, 8364), utf8.len("häh€"))

local function counter()
  local n = 0
  return function() n = n + 1; return n end
end
local next_number = counter()
next_number(); next_number()
print("closure", next_number())

local producer = coroutine.wrap(function()
  for i = 1, 3 do coroutine.yield(i * i) end
end)
print("coroutine", producer(), producer(), producer())

local ok, message = pcall(function() error({code = 7}) end)
print("pcall", ok, type(message), message.code)
print("error", select(2, pcall(error, "plain message", 0)))

-- Enough garbage to make the collector run many cycles.
local big = {}
for i = 1, 50000 do big[i] = tostring(i) .. "x" end
local total = 0
for i = 1, #big, 1000 do total = total + #big[i] end
big = nil
collectgarbage("collect")
print("garbage", total, collectgarbage("count") > 0)
print("sorted", (function()
  local t = {}
  for i = 1, 20000 do t[i] = (i * 7919) % 20000 end
  table.sort(t)
  return t[1], t[10000], t[20000]
end)())
