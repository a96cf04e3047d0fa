---@meta
-- The globals of a `moonwait test` spec file. Add this directory to
-- workspace.library only for the folder of your spec files (it redefines
-- `assert`). README.md, "Editor support".

describe = require("moonwait.test").describe
it = require("moonwait.test").it
before_each = require("moonwait.test").before_each
after_each = require("moonwait.test").after_each
load_script = require("moonwait.test").load_script
invoke = require("moonwait.test").invoke
invoke_batch = require("moonwait.test").invoke_batch
open_script = require("moonwait.test").open_script
close_script = require("moonwait.test").close_script
show = require("moonwait.test").show

---@type moonwait.test.http_fake
http = nil
---@type moonwait.test.redis_fake
redis = nil
---@type lightuserdata
null = nil
---@type moonwait.json
json = nil
---@type moonwait.test.assert
assert = nil
