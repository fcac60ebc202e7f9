-- What the LB served, per pool and member, in a shared dict: requests by status class, upstream response
-- time (histogram buckets), failed tries, and the requests the LB answered itself (rejected ones apart).
-- Keys: "req|<pool>|<id>|<class>", "bucket|<pool>|<id>|<i>", "sum|<pool>|<id>", "fail|<pool>|<id>",
-- "rejected|<pool>|<status>", "lb|<pool>|<class>". Ids and pool names never hold "|" (members.check).
local M = {}

local dict = ngx.shared.tenfold_stats

-- Upper bounds (seconds) of the latency histogram's buckets; one more bucket holds the rest (+Inf).
M.BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
-- Answers the LB gives itself to a client it refuses: rate or connection limit, body too large, too slow.
M.REJECTED = { [408] = true, [413] = true, [429] = true, [444] = true }

local function class(status)
    return math.floor(status / 100) .. "xx"
end

local function incr(key, by)
    local ok, err = dict:incr(key, by or 1, 0)
    if not ok and err ~= "not found" then
        ngx.log(ngx.WARN, "tenfold: counter ", key, ": ", err)
    end
end

-- init_by_lua: when the counters started. A reload keeps the shared dict and so this time; a restart starts
-- both afresh, which is how a reader of the counters tells a restart from a quiet spell.
function M.init()
    dict:add("started", os.time())
end

function M.started()
    return dict:get("started")
end

-- A request a member answered (its upstream response time: the tries' times added up).
function M.served(pool, id, status, response_time)
    local member = pool .. "|" .. id
    incr("req|" .. member .. "|" .. class(status))
    local seconds = 0
    for t in (response_time or ""):gmatch("[%d.]+") do
        seconds = seconds + tonumber(t)
    end
    local bucket = #M.BUCKETS + 1
    for i, bound in ipairs(M.BUCKETS) do
        if seconds <= bound then
            bucket = i
            break
        end
    end
    incr("bucket|" .. member .. "|" .. bucket)
    incr("sum|" .. member, seconds)
end

function M.failure(pool, id)
    incr("fail|" .. pool .. "|" .. id)
end

-- A request of the pool no member answered: refused by the LB (rejected), or its own error (502: none left).
function M.unserved(pool, status)
    if M.REJECTED[status] then
        incr("rejected|" .. pool .. "|" .. status)
    else
        incr("lb|" .. pool .. "|" .. class(status))
    end
end

-- Every counter: {pool = {members = {id = {requests, buckets, sum, failures}}, rejected = {}, lb = {}}}.
function M.read()
    local pools = {}
    local function pool_of(name)
        pools[name] = pools[name] or { members = {}, rejected = {}, lb = {} }
        return pools[name]
    end
    local function member_of(name, id)
        local all = pool_of(name).members
        all[id] = all[id] or { requests = {}, buckets = {}, sum = 0, failures = 0 }
        return all[id]
    end
    for _, key in ipairs(dict:get_keys(0)) do
        local value = dict:get(key)
        local kind, pool, a, b = key:match("^(%a+)|([^|]+)|([^|]+)|?([^|]*)$")
        if kind == "req" then
            member_of(pool, a).requests[b] = value
        elseif kind == "bucket" then
            member_of(pool, a).buckets[tonumber(b)] = value
        elseif kind == "sum" then
            member_of(pool, a).sum = value
        elseif kind == "fail" then
            member_of(pool, a).failures = value
        elseif kind == "rejected" then
            pool_of(pool).rejected[a] = value
        elseif kind == "lb" then
            pool_of(pool).lb[a] = value
        end
    end
    return pools
end

return M
