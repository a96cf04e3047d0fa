---@meta moonwait.metrics

--- The script's own Prometheus metrics, served by `--metrics` after the
--- run's own; one registry for the process, shared by every generation.
--- README.md, "Metrics".
---@class moonwait.metrics
local M = {}

--- A counter: `nil, err` for a bad name, the reserved prefix `moonwait_`, or
--- a name registered with another type or labels.
---@param name string
---@param help string
---@param labels? string[] label names
---@return moonwait.metrics.metric|nil metric
---@return string? err
function M.counter(name, help, labels) end

--- A gauge (same rules as `counter`).
---@param name string
---@param help string
---@param labels? string[]
---@return moonwait.metrics.metric|nil metric
---@return string? err
function M.gauge(name, help, labels) end

--- A histogram; `buckets` increasing upper bounds (nil: the defaults).
---@param name string
---@param help string
---@param labels? string[]
---@param buckets? number[]
---@return moonwait.metrics.metric|nil metric
---@return string? err
function M.histogram(name, help, labels, buckets) end

--- A registered metric. Each method returns `true`, or `nil, err` for a
--- wrong number of label values, a label value that is not UTF-8, a
--- negative counter increment or a metric past its 1000 label sets; it
--- raises on misuse of types (`observe` on a counter, say).
---@class moonwait.metrics.metric
local metric = {}

--- Counter or gauge: add `n` (default 1).
---@param n? number
---@param labelvalues? (string|number)[]
---@return true|nil ok
---@return string? err
function metric:inc(n, labelvalues) end

--- Gauge: subtract `n` (default 1).
---@param n? number
---@param labelvalues? (string|number)[]
---@return true|nil ok
---@return string? err
function metric:dec(n, labelvalues) end

--- Gauge: set to `v`.
---@param v number
---@param labelvalues? (string|number)[]
---@return true|nil ok
---@return string? err
function metric:set(v, labelvalues) end

--- Histogram: count `v` in its bucket.
---@param v number
---@param labelvalues? (string|number)[]
---@return true|nil ok
---@return string? err
function metric:observe(v, labelvalues) end

return M
