-- Picking a member for each try of a request, counting requests in flight per member, and marking members
-- that fail (as max_fails/fail_timeout do, but shared by all workers). No other logic lives here.
local ngx_balancer = require("ngx.balancer")
local members = require("tenfold.members")
local stats = require("tenfold.stats")

local M = {}

local shared = ngx.shared.tenfold_balancer -- "inflight:<pool>:<id>", "fails:<pool>:<id>", "down:<pool>:<id>"
local config = { cookie = "tenfold_route", max_fails = 3, fail_timeout = 10, tries = 3 }
local turn = 0 -- this worker's round-robin position (also breaks least-connection ties)

function M.configure(cfg)
    config = cfg
end

function M.inflight(pool, id)
    return shared:get("inflight:" .. pool .. ":" .. id) or 0
end

function M.is_down(pool, id)
    return shared:get("down:" .. pool .. ":" .. id) ~= nil
end

local function release(pool, id)
    if id and id ~= "" then
        local left = shared:incr("inflight:" .. pool .. ":" .. id, -1, 0)
        if left and left < 0 then
            shared:set("inflight:" .. pool .. ":" .. id, 0)
        end
    end
end

-- A failed try: after max_fails of them within fail_timeout the member rests for fail_timeout.
local function failed(pool, id)
    stats.failure(pool, id)
    local key = pool .. ":" .. id
    local fails = shared:incr("fails:" .. key, 1, 0, config.fail_timeout)
    if fails and fails >= config.max_fails then
        shared:set("down:" .. key, true, config.fail_timeout)
        shared:delete("fails:" .. key)
    end
end

-- The active members not tried yet for this request and not resting; if every one rests, all of them
-- (a member that is really gone refuses at once, and one that came back is used again at once). A retry
-- prefers an address not tried yet: a try that failed on a host that is gone must not wait out another
-- member there. nginx gives a try back when a cached keep-alive connection turned out closed: with every
-- member tried, that try goes to them again, on a new connection.
local function candidates(pool, view, tried, tried_at)
    local fresh, untried, elsewhere = {}, {}, {}
    for _, m in ipairs(view.active) do
        if not tried[m.id] then
            untried[#untried + 1] = m
            if not M.is_down(pool, m.id) then
                fresh[#fresh + 1] = m
                if not tried_at[m.address] then
                    elsewhere[#elsewhere + 1] = m
                end
            end
        end
    end
    if #untried == 0 and next(tried) ~= nil then
        return candidates(pool, view, {}, {})
    end
    if #elsewhere > 0 then
        return elsewhere
    end
    return #fresh > 0 and fresh or untried
end

local function least_conn(pool, list)
    turn = turn + 1
    local best, fewest
    for i = 0, #list - 1 do
        local m = list[(turn + i) % #list + 1]
        local count = M.inflight(pool, m.id)
        if not best or count < fewest then
            best, fewest = m, count
        end
    end
    return best
end

-- The first point of the ring at or after the key's hash whose member is a candidate.
local function consistent(view, list, key)
    local allowed = {}
    for _, m in ipairs(list) do
        allowed[m.id] = true
    end
    local ring, hash = view.ring, ngx.crc32_long(key)
    local lo, hi = 1, #ring
    while lo < hi do
        local mid = math.floor((lo + hi) / 2)
        if ring[mid][1] < hash then
            lo = mid + 1
        else
            hi = mid
        end
    end
    for i = 0, #ring - 1 do
        local m = ring[(lo - 1 + i) % #ring + 1][2]
        if allowed[m.id] then
            return m
        end
    end
    return list[1]
end

local function pick(pool, view, list)
    local method = members.pools()[pool].method
    if method == "least_conn" then
        return least_conn(pool, list)
    elseif method == "round_robin" then
        turn = turn + 1
        return list[turn % #list + 1]
    elseif method == "ip_hash" then
        return consistent(view, list, ngx.var.remote_addr)
    end
    -- hash: the client's own member while its route cookie names a candidate, else the consistent hash
    local pinned = view.by_route[ngx.var["cookie_" .. config.cookie] or ""]
    for _, m in ipairs(list) do
        if m == pinned then
            return m
        end
    end
    local seed = members.pools()[pool].seed
    return consistent(view, list, seed == "request_id" and ngx.var.request_id or ngx.var.remote_addr)
end

-- balancer_by_lua: called for the first try of a request and again for each retry nginx decides on
-- (proxy_next_upstream: never a non-idempotent request once sent).
function M.balance(pool)
    local ctx, var = ngx.ctx, ngx.var
    local view = members.pool(pool)
    local tried, tried_at = ctx.tenfold_tried, ctx.tenfold_tried_at
    if tried then
        local previous = var.tenfold_member
        release(pool, previous)
        if ngx_balancer.get_last_failure() == "failed" then
            failed(pool, previous)
        end
    else
        tried, tried_at = {}, {}
        ctx.tenfold_tried, ctx.tenfold_tried_at = tried, tried_at
        -- nginx counts no try of its own: the upstream's only server is a placeholder marked down. So the
        -- tries set here are all the request gets (one fewer left a request that met two gone members a 502).
        local tries = math.min(#view.active, config.tries)
        if tries > 1 then
            ngx_balancer.set_more_tries(tries)
        end
    end
    local list = candidates(pool, view, tried, tried_at)
    if #list == 0 then
        var.tenfold_member = ""
        ngx.log(ngx.WARN, "tenfold: pool ", pool, " has no active member to try")
        return ngx.exit(-3) -- NGX_BUSY: "no live upstreams", a 502
    end
    local m = pick(pool, view, list)
    tried[m.id], tried_at[m.address] = true, true
    var.tenfold_member = m.id
    shared:incr("inflight:" .. pool .. ":" .. m.id, 1, 0)
    local ok, err = ngx_balancer.set_current_peer(m.address, m.port)
    if not ok then
        ngx.log(ngx.ERR, "tenfold: cannot use member ", m.id, ": ", err)
    end
end

-- log_by_lua, for every request of every location: the last try's bookkeeping, then the counters.
-- $tenfold_member survives an internal redirect to an error page, where ngx.ctx does not.
function M.log()
    local var = ngx.var
    local pool = var.tenfold_pool
    if not pool or not members.pools()[pool] then
        return
    end
    local id = var.tenfold_member
    if id and id ~= "" then
        release(pool, id)
        local statuses = var.upstream_status or ""
        local last = statuses:match("(%d+)%s*$")
        if last == "502" or last == "504" then
            failed(pool, id)
        end
        stats.served(pool, id, ngx.status, var.upstream_response_time)
    else
        stats.unserved(pool, ngx.status)
    end
end

-- header_filter_by_lua of the hash-balanced pool: name the member that served in the route cookie when the
-- client's cookie does not name it already (no cookie yet, or its member left, drains or failed).
function M.route_cookie(pool)
    local id = ngx.var.tenfold_member
    local m = id and id ~= "" and members.pool(pool).by_id[id]
    if not m or ngx.var["cookie_" .. config.cookie] == m.route then
        return
    end
    local cookie = config.cookie .. "=" .. m.route .. "; Path=/; HttpOnly; Secure; SameSite=Lax"
    local existing = ngx.header["Set-Cookie"]
    if type(existing) == "table" then
        existing[#existing + 1] = cookie
        ngx.header["Set-Cookie"] = existing
    elseif existing then
        ngx.header["Set-Cookie"] = { existing, cookie }
    else
        ngx.header["Set-Cookie"] = cookie
    end
end

return M
