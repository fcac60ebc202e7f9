-- Each pool's members as data: a shared dict every worker reads, written only through the control API,
-- persisted to a file so that a restarted nginx starts from the members it had.
-- A pool's set is {generation = N, members = {{id, address, port, state}, ...}}; a write names the
-- generation it is based on, and one based on an older generation is refused.
local cjson = require("cjson.safe")

local M = {}

local dict = ngx.shared.tenfold_members
local config = { pools = {}, state_file = nil }
local cache = {} -- per worker: pool -> the decoded set, with lookup tables, of dict generation `generation`

local ID = [[^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$]]
local IPV4 = [[^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$]]
local STATES = { active = true, draining = true }
local MEMBER_KEYS = { id = true, address = true, port = true, state = true }
local MAX_MEMBERS = 256

M.STATES = STATES

local function encode(set)
    -- cjson writes an empty table as {}; members is a list even when empty.
    local text = cjson.encode(set)
    if #set.members == 0 then
        text = text:gsub('"members":{}', '"members":[]')
    end
    return text
end

-- The route cookie's value for a member: the first 10 hex digits of sha1("address:port").
local function route(address, port)
    local digest = ngx.sha1_bin(address .. ":" .. port)
    return (digest:sub(1, 5):gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- A consistent-hash ring of the active members: 160 points each, sorted by their crc32.
local function ring(active)
    local points = {}
    for _, m in ipairs(active) do
        for i = 1, 160 do
            points[#points + 1] = { ngx.crc32_long(m.address .. ":" .. m.port .. "#" .. i), m }
        end
    end
    table.sort(points, function(a, b) return a[1] < b[1] end)
    return points
end

local function index(set)
    local view = { generation = set.generation, members = set.members, by_id = {}, by_route = {}, active = {} }
    for _, m in ipairs(set.members) do
        m.route = route(m.address, m.port)
        view.by_id[m.id] = m
        view.by_route[m.route] = m
        if m.state == "active" then
            view.active[#view.active + 1] = m
        end
    end
    view.ring = ring(view.active)
    return view
end

local function stored(pool)
    local text = dict:get("set:" .. pool)
    return text and cjson.decode(text) or { generation = 0, members = {} }
end

-- The pool's current set, as this worker last decoded it when the generation has not moved since.
function M.pool(pool)
    local generation = dict:get("gen:" .. pool) or 0
    local view = cache[pool]
    if view and view.generation == generation then
        return view
    end
    view = index(stored(pool))
    cache[pool] = view
    return view
end

function M.pools()
    return config.pools
end

local function fail(path, message)
    return nil, path .. ": " .. message
end

local function check_member(m, i, ids, addresses)
    local path = "members[" .. i .. "]"
    if type(m) ~= "table" then
        return fail(path, "must be an object with id, address, port and state")
    end
    for key in pairs(m) do
        if not MEMBER_KEYS[key] then
            return fail(path, "unknown field " .. cjson.encode(tostring(key)))
        end
    end
    if type(m.id) ~= "string" or not ngx.re.find(m.id, ID, "jo") then
        return fail(path .. ".id", cjson.encode(m.id) .. " must be 1-63 letters, digits, '.', '_' or '-'")
    end
    local octets = type(m.address) == "string" and ngx.re.match(m.address, IPV4, "jo")
    local valid = octets ~= nil and octets ~= false
    if valid then
        for k = 1, 4 do
            valid = valid and tonumber(octets[k]) <= 255
        end
    end
    if not valid then
        return fail(path .. ".address", cjson.encode(m.address) .. " must be an IPv4 address")
    end
    if type(m.port) ~= "number" or m.port ~= math.floor(m.port) or m.port < 1 or m.port > 65535 then
        return fail(path .. ".port", cjson.encode(m.port) .. " must be a whole number from 1 to 65535")
    end
    if not STATES[m.state] then
        return fail(path .. ".state", cjson.encode(m.state) .. ' must be "active" or "draining"')
    end
    local endpoint = m.address .. ":" .. m.port
    if ids[m.id] then
        return fail(path .. ".id", cjson.encode(m.id) .. " is listed twice")
    end
    if addresses[endpoint] then
        return fail(path, endpoint .. " is listed twice")
    end
    ids[m.id], addresses[endpoint] = true, true
    return { id = m.id, address = m.address, port = m.port, state = m.state }
end

-- A write's body, checked field by field: {generation = N, members = [...]}. Returns the members or an error.
function M.check(body)
    if type(body) ~= "table" or body[1] ~= nil then
        return nil, 'the body must be a JSON object {"generation": N, "members": [...]}'
    end
    for key in pairs(body) do
        if key ~= "generation" and key ~= "members" then
            return nil, "unknown field " .. cjson.encode(tostring(key))
        end
    end
    local generation = body.generation
    if type(generation) ~= "number" or generation ~= math.floor(generation) or generation < 0 then
        return nil, "generation: " .. cjson.encode(generation) .. " must be the whole number the write is based on"
    end
    local list = body.members
    if type(list) ~= "table" or (next(list) ~= nil and #list == 0) then
        return nil, "members: must be a list"
    end
    if #list > MAX_MEMBERS then
        return nil, "members: at most " .. MAX_MEMBERS .. " per pool"
    end
    local count = 0
    for _ in pairs(list) do
        count = count + 1
    end
    if count ~= #list then
        return nil, "members: must be a list"
    end
    local members, ids, addresses = {}, {}, {}
    for i, m in ipairs(list) do
        local member, err = check_member(m, i, ids, addresses)
        if not member then
            return nil, err
        end
        members[i] = member
    end
    return members
end

local function persist(sets)
    local path = config.state_file
    if not path then
        return true
    end
    local tmp = path .. ".tmp" .. ngx.worker.pid()
    local file, err = io.open(tmp, "w")
    if not file then
        return nil, err
    end
    local parts = {}
    for pool, set in pairs(sets) do
        parts[#parts + 1] = cjson.encode(pool) .. ":" .. encode(set)
    end
    local ok, werr = file:write('{"pools":{' .. table.concat(parts, ",") .. "}}\n")
    file:close()
    if not ok then
        os.remove(tmp)
        return nil, werr
    end
    local renamed, rerr = os.rename(tmp, path)
    if not renamed then
        os.remove(tmp)
        return nil, rerr
    end
    return true
end

-- Replace a pool's members. Returns the new generation, or nil, an HTTP status and the reason.
function M.write(pool, based_on, members)
    if not config.pools[pool] then
        return nil, 404, "no pool " .. cjson.encode(pool)
    end
    -- One writer at a time (across workers); the lock expires by itself if a worker dies holding it.
    if not dict:add("lock", true, 5) then
        return nil, 409, "another write is in progress; read the pool again and retry"
    end
    local current = dict:get("gen:" .. pool) or 0
    if based_on ~= current then
        dict:delete("lock")
        return nil, 409, "generation " .. based_on .. " is stale: the pool is at generation " .. current
    end
    local sets = {}
    for name in pairs(config.pools) do
        sets[name] = stored(name)
    end
    sets[pool] = { generation = current + 1, members = members }
    local ok, err = persist(sets)
    if not ok then
        dict:delete("lock")
        return nil, 500, "could not persist the members (" .. tostring(err) .. "); nothing changed"
    end
    dict:set("set:" .. pool, encode(sets[pool]))
    dict:set("gen:" .. pool, current + 1)
    dict:delete("lock")
    return current + 1
end

-- init_by_lua: remember the pools; a fresh start (nothing in the dict yet) loads the persisted members.
-- A reload keeps the shared dict, which is newer than or equal to the file.
function M.init(cfg)
    config = cfg
    local file = cfg.state_file and io.open(cfg.state_file, "r")
    local saved = file and cjson.decode(file:read("*a")) or {}
    if file then
        file:close()
    end
    for pool in pairs(cfg.pools) do
        local set = type(saved.pools) == "table" and saved.pools[pool]
        if not dict:get("gen:" .. pool) and type(set) == "table" and type(set.generation) == "number" then
            local members = M.check({ generation = set.generation, members = set.members or {} })
            if members then
                dict:set("set:" .. pool, encode({ generation = set.generation, members = members }))
                dict:set("gen:" .. pool, set.generation)
            else
                ngx.log(ngx.ERR, "tenfold: ignoring the persisted members of pool ", pool, " in ", cfg.state_file)
            end
        end
    end
end

return M
