-- wrk -s t/bench/tokens.lua: each request carries the next token of the
-- file $TOKENS (one a line), from a random one, or from the first when
-- $START is set; "Connection: close" too when $CLOSE is set
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local i = os.getenv("START") and 0 or math.random(#tokens)
local close = os.getenv("CLOSE")
request = function()
  i = i % #tokens + 1
  local h = {["Authorization"] = "Bearer " .. tokens[i]}
  if close then h["Connection"] = "close" end
  return wrk.format("GET", nil, h)
end
