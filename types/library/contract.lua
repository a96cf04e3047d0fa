---@meta
-- The script contract: what a script's module (M) may define and what
-- `ctx` holds. Type your module with `---@type moonwait.module` above
-- `local M = {}` to get completion and checks for the hooks and ctx.
-- README.md, "The script contract".

--- An output record: a JSON object (or any JSON value) as a Lua table.
---@alias moonwait.record table<string, any>

--- An attempt's outputs: an array of 0..N records (`{ record }` emits one,
--- `{}` none).
---@alias moonwait.outputs moonwait.record[]

--- The ctx of a record's attempt (async_invoke, batch_invoke's ctxs[i],
--- on_timeout, the retry predicates).
---@class moonwait.ctx
---@field seq integer the record's number, from 1
---@field line integer its input line
---@field attempt integer the attempt, from 1
---@field deadline number? the record's deadline in `moonwait.time.now()` seconds (nil without a timeout)
---@field last_error string? the previous attempt's error (nil on the first attempt and after a retry on a result)
---@field source_id string? a Redis Streams entry's id (with a stream input)
---@field deliveries integer? how often the entry was delivered, from 1 (with source_id)
---@field log moonwait.log the moonwait.log functions; their lines carry seq=N
---@field worker integer which worker runs the attempt, 1..N with `--workers N` (1 without; in on_timeout always 1, the main thread's VM); module-level state is per worker
local ctx = {}

--- Whole milliseconds left before the record's deadline (math.huge without one).
---@return number
function ctx.remaining_ms() end

--- Cleanup that runs when the attempt ends, however it ends, newest first:
--- `fn(how)`, how being "returned", "raised" or "abandoned". It cannot wait.
---@param fn fun(how: "returned"|"raised"|"abandoned")
function ctx.defer(fn) end

--- The service said it is overloaded (adaptive capacity lowers the limit).
function ctx.overloaded() end

--- The ctx of `open` and `close`.
---@class moonwait.hook_ctx
---@field generation integer the generation (1, then one more per hot reload)
---@field previous any? open only: a copy of the previous generation's export_state()
---@field log moonwait.log
---@field worker integer which worker runs this VM, 1..N with `--workers N` (open and close run once on each)
local hook_ctx = {}

---@return number
function hook_ctx.remaining_ms() end

---@param fn fun(how: "returned"|"raised"|"abandoned")
function hook_ctx.defer(fn) end

--- Raises: there is no attempt to report an overload for.
function hook_ctx.overloaded() end

--- A retry strategy (M.retry; the flag and the pipeline file override it).
---@class moonwait.retry_strategy
---@field max_attempts integer every call, the first included
---@field backoff "fixed"|"exponential"|"none"
---@field delay_ms? integer fixed
---@field initial_delay_ms? integer exponential
---@field max_delay_ms? integer exponential
---@field multiplier? number exponential
---@field jitter? "none"|"full"

--- Batch settings (M.batch; the flags and the pipeline file override them).
---@class moonwait.batch_opts
---@field max_size? integer records per call (default 100)
---@field max_wait_ms? integer how long a batch may wait to fill (default 5)
---@field key? string batch only records with the same value of this field ("a.b" for nested)

--- A script's module: the table the script returns.
---@class moonwait.module
---@field retry? moonwait.retry_strategy
---@field batch? moonwait.batch_opts
local module = {}

--- One coroutine per record: an array of 0..N outputs, or `nil, err`
--- (raising fails the record too). Required unless batch_invoke is defined.
---@param record moonwait.record
---@param ctx moonwait.ctx
---@return moonwait.outputs|nil outputs
---@return string? err
function module.async_invoke(record, ctx) end

--- One coroutine per batch: `results[i]` is records[i]'s outputs; where it
--- is nil, `errs[i]` is that record's error. `nil, err` fails the batch.
---@param records moonwait.record[]
---@param ctxs moonwait.ctx[]
---@return moonwait.outputs[]|nil results
---@return (string|nil)[]|string|nil errs
function module.batch_invoke(records, ctxs) end

--- When a record's timeout fires: a fresh copy of the record as read; its
--- array is emitted instead. Must not wait.
---@param record moonwait.record
---@param ctx moonwait.ctx
---@return moonwait.outputs|nil outputs
---@return string? err
function module.on_timeout(record, ctx) end

--- Retry a successful attempt? (runs as a coroutine; may wait)
---@param outputs moonwait.outputs
---@param ctx moonwait.ctx
---@return boolean
function module.retry_on_result(outputs, ctx) end

--- Retry a failed attempt? `err` is the message without the traceback.
---@param err string
---@param ctx moonwait.ctx
---@return boolean
function module.retry_on_error(err, ctx) end

--- Once, before the first record (and in each new generation); may wait.
--- `nil, err` fails the run (rejects a reload).
---@param ctx moonwait.hook_ctx
---@return any ok
---@return string? err
function module.open(ctx) end

--- Once, after the last record (also after a failure); may wait.
---@param ctx moonwait.hook_ctx
---@return any ok
---@return string? err
function module.close(ctx) end

--- At a hot reload: state for the next generation's `ctx.previous`
--- (strings, numbers, booleans and tables of them). Must not wait.
---@return any
function module.export_state() end
