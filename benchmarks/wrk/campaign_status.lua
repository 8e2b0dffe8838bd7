-- GET /v1/campaign/status for a rotating user, each with its own device id.
-- Arguments (after --): number of seeded users.
local users = 2000
local n = 0
local thread_count = 0

function setup(thread)
  thread:set("tid", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  users = tonumber(args[1]) or users
  n = (tid or 0) * 7919
end

function request()
  n = n + 1
  local user = string.format("u%05d", 1 + n % users)
  return wrk.format("GET", "/v1/campaign/status?user_id=" .. user, {["X-Device-Id"] = "device-" .. user})
end
