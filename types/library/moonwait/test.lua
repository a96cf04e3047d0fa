---@meta moonwait.test

--- Unit tests of a script, run by `moonwait test SPEC.lua` (only there: it
--- needs the command's runtime). A spec file gets these as globals
--- (types/spec-env/). README.md, "Testing a script".
---@class moonwait.test
---@field assert moonwait.test.assert
---@field http moonwait.test.http_fake the fake moonwait.http scripts get
---@field redis moonwait.test.redis_fake the fake moonwait.redis scripts get
---@field null lightuserdata moonwait.null
---@field json moonwait.json
local M = {}

---@class moonwait.test.load_opts
---@field env? table<string, string|number> what os.getenv gives the script

--- The script's module (path relative to the spec), loaded fresh with the
--- fakes in place and checked as a run checks it; raises what a run would
--- refuse it for.
---@param path string
---@param opts? moonwait.test.load_opts
---@return moonwait.module
function M.load_script(path, opts) end

---@class moonwait.test.invoke_opts
---@field timeout_ms? integer the record's timeout (default 10000; 0 = none)
---@field seq? integer
---@field line? integer
---@field source_id? string
---@field deliveries? integer
---@field retry? moonwait.retry_strategy|"none" instead of M.retry
---@field worker? integer ctx.worker, as --workers N gives it (1..N; default 1)

---@class moonwait.test.result
---@field ok boolean the record succeeded (outputs emitted)
---@field outputs moonwait.record[]? what a reader of the output would decode
---@field lines string[]? each output as moonwait.json.encode writes it
---@field err string? the error (as a dead letter gives it)
---@field traceback string?
---@field attempts integer?
---@field timed_out boolean
---@field overloads integer?

--- One record's whole life as a run gives it: attempts within one deadline,
--- retry predicates and strategy, back-offs, on_timeout.
---@param mod moonwait.module
---@param record moonwait.record|string a table or a JSON line
---@param opts? moonwait.test.invoke_opts
---@return moonwait.test.result
function M.invoke(mod, record, opts) end

--- One call of batch_invoke: a result per record, and the batch's own error
--- when the whole batch failed.
---@param mod moonwait.module
---@param records (moonwait.record|string)[]
---@param opts? moonwait.test.invoke_opts
---@return moonwait.test.result[]
---@return string? err
function M.invoke_batch(mod, records, opts) end

---@class moonwait.test.hook_opts
---@field previous? any ctx.previous
---@field generation? integer ctx.generation (default 1)
---@field worker? integer ctx.worker (default 1)

---@param mod moonwait.module
---@param opts? moonwait.test.hook_opts
---@return true|nil ok
---@return string? err
function M.open_script(mod, opts) end

---@param mod moonwait.module
---@param opts? moonwait.test.hook_opts
---@return true|nil ok
---@return string? err
function M.close_script(mod, opts) end

---@param name string
---@param fn fun()
function M.describe(name, fn) end

---@param name string
---@param fn fun()
function M.it(name, fn) end

---@param fn fun()
function M.before_each(fn) end

---@param fn fun()
function M.after_each(fn) end

--- A value as the failure messages show it.
---@param v any
---@return string
function M.show(v) end

--- Deep equality, as assert.same compares.
---@param a any
---@param b any
---@return boolean
function M.deep_equal(a, b) end

---@class moonwait.test.assert
---@overload fun(v: any, msg?: string, ...: any): any
local A = {}
---@param expected any
---@param actual any
---@param msg? string
function A.equal(expected, actual, msg) end
---@param expected any
---@param actual any
---@param msg? string
function A.same(expected, actual, msg) end
---@param v any
---@param msg? string
function A.truthy(v, msg) end
---@param v any
---@param msg? string
function A.falsy(v, msg) end
---@param v any
---@param msg? string
function A.is_nil(v, msg) end
---@param pattern string
---@param s any
---@param msg? string
function A.matches(pattern, s, msg) end
---@param fn fun()
---@param pattern? string
---@param msg? string
function A.has_error(fn, pattern, msg) end
---@param res moonwait.test.result
---@param n? integer outputs expected
---@param msg? string
function A.ok(res, n, msg) end
---@param res moonwait.test.result
---@param pattern? string
---@param msg? string
function A.failed(res, pattern, msg) end
---@param res moonwait.test.result
---@param msg? string
function A.timed_out(res, msg) end

---@class moonwait.test.http_request
---@field method string
---@field url string
---@field headers table<string, string>
---@field body string?
---@field opts moonwait.http.request_opts

---@class moonwait.test.http_answer
---@field status? integer default 200
---@field headers? table<string, string>
---@field body? string|table a table is sent as JSON
---@field delay? number seconds
---@field error? string e.g. "connection refused": nil, "connection refused (GET URL)"
---@field timeout? boolean waits the request's timeout_ms: nil, "timeout (GET URL)"

---@alias moonwait.test.http_answers moonwait.test.http_answer|moonwait.test.http_answer[]|fun(req: moonwait.test.http_request): moonwait.test.http_answer|nil, string?

--- The fake moonwait.http: the client's functions, and the spec's side.
---@class moonwait.test.http_fake: moonwait.http
---@field calls moonwait.test.http_request[] the requests made in this test
---@field unmatched string[] requests without an answer ("GET URL")
local H = {}

--- Answers `method` ("*": any) requests whose URL matches the Lua pattern;
--- the newest matching answer wins; an array is used in turn, its last repeating.
---@param method string
---@param url_pattern string
---@param answer moonwait.test.http_answers
function H.on(method, url_pattern, answer) end

--- No answers, no calls (done before every test).
function H.reset() end

---@class moonwait.test.redis_answer
---@field value? any the reply
---@field delay? number seconds
---@field reply_error? string false, "MSG (redis HOST:PORT CMD)"
---@field error? string nil, "ERR (HOST:PORT)", and the connection closes
---@field timeout? boolean nil, "timeout (HOST:PORT)"

---@class moonwait.test.redis_call
---@field cmd string
---@field args string[]

--- The fake moonwait.redis.
---@class moonwait.test.redis_fake: moonwait.redis
---@field calls moonwait.test.redis_call[]
---@field unmatched string[]
---@field connects { host: string, port: integer, opts: table? }[]
local R = {}

--- Answers `cmd` ("*": any) whose arguments, joined by spaces, match the
--- Lua pattern (nil: any): a reply, a moonwait.test.redis_answer, or a
--- function of the arguments returning the reply.
---@param cmd string
---@param args_pattern string|nil
---@param answer any|moonwait.test.redis_answer|fun(...: string): any, string?
function R.on(cmd, args_pattern, answer) end

--- The next connects fail with `err` ("connection refused", ...).
---@param err string
function R.fail_connect(err) end

function R.reset() end

return M
