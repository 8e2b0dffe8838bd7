-- POST /v1/payments with a fresh Idempotency-Key per request, rotating users and merchants:
-- three in four pay from balance, one in four by card, ¥100-¥499 so wallets last many runs.
-- Arguments (after --): key prefix (unique per run), users, merchants.
-- done() prints one "status-codes" line so declines (402) can be told from failures.
local prefix, users, merchants = "bench", 2000, 50
local n = 0
statuses = {}  -- global: done() reads it from each thread with thread:get
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  prefix = args[1] or prefix
  users = tonumber(args[2]) or users
  merchants = tonumber(args[3]) or merchants
end

function request()
  n = n + 1
  local i = (tid or 0) * 1000003 + n
  local user = string.format("u%05d", 1 + (i * 7) % users)
  local body = string.format(
    '{"user_id":"%s","merchant_id":"m%03d","amount":%d,"method":"%s"}',
    user, 1 + i % merchants, 100 + (i * 37) % 400, (i % 4 == 0) and "card" or "balance")
  return wrk.format("POST", "/v1/payments", {
    ["Idempotency-Key"] = prefix .. "-" .. (tid or 0) .. "-" .. n,
    ["X-Device-Id"] = "device-" .. user,
    ["Content-Type"] = "application/json",
  }, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      total[status] = (total[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(total) do
    table.insert(parts, status .. "=" .. count)
  end
  table.sort(parts)
  io.write("status-codes: " .. table.concat(parts, " ") .. "\n")
end
