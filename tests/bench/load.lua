-- wrk script of tests/bench/load.py: cycles through the requests of a file that load.py wrote,
-- optionally giving each request its own Idempotency-Key, counts the response statuses and
-- prints one "BENCH-RESULT {json}" line when done.
--
-- wrk -t1 -c32 -d5s -s load.lua http://127.0.0.1:PORT -- REQUESTS_FILE [unique]
--
-- File format, per request: "METHOD PATH NHEADERS BODYLEN\n", NHEADERS "Name: value\n"
-- lines, then BODYLEN bytes of body.

local reqs = {}
local raw = {}
local unique = false
local cursor = 0
local counter = 0
local prefix = ""
local threads = {}
statuses = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_no", #threads)
end

local function read_requests(path)
   local f = assert(io.open(path, "rb"))
   while true do
      local line = f:read("*l")
      if not line or line == "" then break end
      local method, target, nheaders, length = line:match("^(%S+) (%S+) (%d+) (%d+)$")
      local headers = {}
      for _ = 1, tonumber(nheaders) do
         local name, value = f:read("*l"):match("^([^:]+): (.*)$")
         headers[name] = value
      end
      local body = nil
      if tonumber(length) > 0 then body = f:read(tonumber(length)) end
      table.insert(reqs, {method = method, path = target, headers = headers, body = body})
   end
   f:close()
end

function init(args)
   read_requests(args[1])
   unique = args[2] == "unique"
   prefix = string.format("bench-%s-%d-%d-", tostring(thread_no), os.time(), math.random(1e9))
   for i, r in ipairs(reqs) do
      local headers = {}
      for k, v in pairs(r.headers) do headers[k] = v end
      raw[i] = wrk.format(r.method, r.path, headers, r.body)
   end
end

function request()
   cursor = cursor % #reqs + 1
   if not unique then return raw[cursor] end
   counter = counter + 1
   local r = reqs[cursor]
   local headers = {}
   for k, v in pairs(r.headers) do headers[k] = v end
   headers["Idempotency-Key"] = prefix .. counter
   return wrk.format(r.method, r.path, headers, r.body)
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local merged = {}
   for _, t in ipairs(threads) do
      for code, n in pairs(t:get("statuses")) do merged[code] = (merged[code] or 0) + n end
   end
   local parts = {}
   for code, n in pairs(merged) do table.insert(parts, string.format('"%d": %d', code, n)) end
   local e = summary.errors
   io.write(string.format(
      'BENCH-RESULT {"requests": %d, "seconds": %.6f, "p50_ms": %.3f, "p99_ms": %.3f, ' ..
      '"errors": %d, "statuses": {%s}}\n',
      summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000,
      latency:percentile(99) / 1000, e.connect + e.read + e.write + e.timeout,
      table.concat(parts, ", ")))
end
