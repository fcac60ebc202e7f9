-- The LB's local control and status API (the status server, on 127.0.0.1 only):
--   GET /members[/<pool>]        each pool's generation and members, with requests in flight
--   PUT /members/<pool>          {"generation": N, "members": [{"id", "address", "port", "state"}]}
--   GET /status                  members and counters as JSON (the monitor's source)
--   GET /metrics                 the same in Prometheus' text format
local cjson = require("cjson.safe")
local balancer = require("tenfold.balancer")
local members = require("tenfold.members")
local stats = require("tenfold.stats")

local M = {}

local function reply(status, body)
    ngx.status = status
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.say(cjson.encode(body))
    return ngx.exit(status)
end

local function sorted_keys(t)
    local keys = {}
    for key in pairs(t) do
        keys[#keys + 1] = key
    end
    table.sort(keys)
    return keys
end

local function sorted_pools()
    return sorted_keys(members.pools())
end

-- A pool as the API shows it: the set plus each member's requests in flight and whether it rests.
local function show(pool)
    local view = members.pool(pool)
    local list = {}
    for i, m in ipairs(view.members) do
        list[i] = {
            id = m.id,
            address = m.address,
            port = m.port,
            state = m.state,
            inflight = balancer.inflight(pool, m.id),
            failing = balancer.is_down(pool, m.id),
        }
    end
    return { pool = pool, generation = view.generation, members = list }
end

local function list_json(value)
    -- An empty Lua table is encoded as {}: a pool without members must still read as a list.
    return (cjson.encode(value):gsub('"members":{}', '"members":[]'))
end

function M.members()
    local pool = ngx.var.tenfold_api_pool
    local method = ngx.req.get_method()
    if pool and pool ~= "" and not members.pools()[pool] then
        return reply(404, { error = "no pool " .. pool .. "; the pools are " .. table.concat(sorted_pools(), ", ") })
    end
    if method == "GET" then
        local body
        if pool and pool ~= "" then
            body = show(pool)
        else
            body = { pools = {} }
            for _, name in ipairs(sorted_pools()) do
                body.pools[name] = show(name)
            end
        end
        ngx.header["Content-Type"] = "application/json"
        ngx.header["Cache-Control"] = "no-store"
        ngx.say(list_json(body))
        return
    end
    if method ~= "PUT" then
        ngx.header["Allow"] = "GET, PUT"
        return reply(405, { error = method .. " is not allowed: GET to read, PUT /members/<pool> to write" })
    end
    if not pool or pool == "" then
        return reply(405, { error = "PUT names the pool: PUT /members/<pool>" })
    end
    ngx.req.read_body()
    local raw = ngx.req.get_body_data()
    if not raw then
        return reply(400, { error = "the body is missing, or larger than the API accepts" })
    end
    local body = cjson.decode(raw)
    if body == nil then
        return reply(400, { error = "the body is not JSON" })
    end
    local list, err = members.check(body)
    if not list then
        return reply(400, { error = err })
    end
    local generation, status, reason = members.write(pool, body.generation, list)
    if not generation then
        return reply(status, { error = reason })
    end
    ngx.log(ngx.NOTICE, "tenfold: pool ", pool, " now has ", #list, " member(s), generation ", generation)
    return reply(200, { pool = pool, generation = generation })
end

function M.status()
    local counters = stats.read()
    local body = { pools = {} }
    for _, name in ipairs(sorted_pools()) do
        local pool = show(name)
        local seen = counters[name] or { members = {}, rejected = {}, lb = {} }
        pool.rejected, pool.lb, pool.served = seen.rejected, seen.lb, {}
        for id, figures in pairs(seen.members) do
            local count = 0
            for _, n in pairs(figures.buckets) do
                count = count + n
            end
            local buckets = {}
            for i = 1, #stats.BUCKETS + 1 do
                buckets[i] = figures.buckets[i] or 0
            end
            pool.served[id] = {
                requests = figures.requests,
                failures = figures.failures,
                response_time = { count = count, sum = figures.sum, buckets = buckets },
            }
        end
        body.pools[name] = pool
    end
    -- Bucket i counts the answers slower than bound i-1 and no slower than bound i; the last has the rest.
    body.bucket_bounds, body.counters_since = stats.BUCKETS, stats.started()
    ngx.header["Content-Type"] = "application/json"
    ngx.header["Cache-Control"] = "no-store"
    ngx.say(list_json(body))
end

local function labels(pairs_list)
    local parts = {}
    for i = 1, #pairs_list, 2 do
        parts[#parts + 1] = pairs_list[i] .. '="' .. pairs_list[i + 1] .. '"'
    end
    return "{" .. table.concat(parts, ",") .. "}"
end

function M.metrics()
    local out = {}
    local function add(line)
        out[#out + 1] = line
    end
    local counters = stats.read()
    local pools = sorted_pools()
    add("# HELP tenfold_lb_members Members of each pool by state.")
    add("# TYPE tenfold_lb_members gauge")
    for _, pool in ipairs(pools) do
        local by_state = { active = 0, draining = 0 }
        for _, m in ipairs(members.pool(pool).members) do
            by_state[m.state] = by_state[m.state] + 1
        end
        for _, state in ipairs({ "active", "draining" }) do
            add("tenfold_lb_members" .. labels({ "pool", pool, "state", state }) .. " " .. by_state[state])
        end
    end
    add("# HELP tenfold_lb_members_generation Generation of each pool's member set.")
    add("# TYPE tenfold_lb_members_generation gauge")
    for _, pool in ipairs(pools) do
        add("tenfold_lb_members_generation" .. labels({ "pool", pool }) .. " " .. members.pool(pool).generation)
    end
    add("# HELP tenfold_lb_inflight_requests Requests a member is serving now.")
    add("# TYPE tenfold_lb_inflight_requests gauge")
    for _, pool in ipairs(pools) do
        for _, m in ipairs(members.pool(pool).members) do
            add("tenfold_lb_inflight_requests" .. labels({ "pool", pool, "member", m.id }) .. " "
                .. balancer.inflight(pool, m.id))
        end
    end
    add("# HELP tenfold_lb_requests_total Requests answered by a member, by status class.")
    add("# TYPE tenfold_lb_requests_total counter")
    local hist, fails = {}, {}
    for _, pool in ipairs(pools) do
        local seen = counters[pool] or { members = {} }
        for _, id in ipairs(sorted_keys(seen.members)) do
            local figures = seen.members[id]
            for _, c in ipairs(sorted_keys(figures.requests)) do
                add("tenfold_lb_requests_total" .. labels({ "pool", pool, "member", id, "code", c }) .. " "
                    .. figures.requests[c])
            end
            local cumulative = 0
            for i, bound in ipairs(stats.BUCKETS) do
                cumulative = cumulative + (figures.buckets[i] or 0)
                hist[#hist + 1] = "tenfold_lb_upstream_response_time_seconds_bucket"
                    .. labels({ "pool", pool, "member", id, "le", tostring(bound) }) .. " " .. cumulative
            end
            cumulative = cumulative + (figures.buckets[#stats.BUCKETS + 1] or 0)
            local base = labels({ "pool", pool, "member", id })
            hist[#hist + 1] = "tenfold_lb_upstream_response_time_seconds_bucket"
                .. labels({ "pool", pool, "member", id, "le", "+Inf" }) .. " " .. cumulative
            hist[#hist + 1] = "tenfold_lb_upstream_response_time_seconds_sum" .. base .. " " .. figures.sum
            hist[#hist + 1] = "tenfold_lb_upstream_response_time_seconds_count" .. base .. " " .. cumulative
            fails[#fails + 1] = "tenfold_lb_upstream_failures_total" .. base .. " " .. figures.failures
        end
    end
    add("# HELP tenfold_lb_upstream_response_time_seconds Upstream response time of requests members answered.")
    add("# TYPE tenfold_lb_upstream_response_time_seconds histogram")
    for _, line in ipairs(hist) do
        add(line)
    end
    add("# HELP tenfold_lb_upstream_failures_total Tries that failed on a member (connect error, timeout, 502/504).")
    add("# TYPE tenfold_lb_upstream_failures_total counter")
    for _, line in ipairs(fails) do
        add(line)
    end
    local function family(name, help, field)
        add("# HELP " .. name .. " " .. help)
        add("# TYPE " .. name .. " counter")
        for _, pool in ipairs(pools) do
            local seen = counters[pool] or { rejected = {}, lb = {} }
            for code, n in pairs(seen[field]) do
                add(name .. labels({ "pool", pool, "code", code }) .. " " .. n)
            end
        end
    end
    family("tenfold_lb_rejected_requests_total", "Requests the LB refused itself (429, 413, 408, 444).", "rejected")
    family("tenfold_lb_unserved_requests_total", "Other requests of a pool the LB answered itself, by class.", "lb")
    ngx.header["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    ngx.print(table.concat(out, "\n") .. "\n")
end

return M
