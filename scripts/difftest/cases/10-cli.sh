# flags, values, the pipeline file, check
c help '$MW --help; echo; $MW -h; $MW help; $MW'
c version '$MW --version; $MW --version extra'
c unknown-cmd '$MW frobnicate'
c unknown-flag '$MW run --script pass.lua --bogus </dev/null'
c typo-flag '$MW run --scirpt pass.lua </dev/null'
c flag-missing-value '$MW run --script'
c flag-missing-value2 '$MW run --script pass.lua --capacity'
c no-script '$MW run </dev/null'
c run-help '$MW run --help'
c eq-form '$MW run --script=pass.lua --input=in.jsonl --mode=unordered --capacity=1 --timeout=0 --output=o.jsonl'
c eq-empty '$MW run --script= --input in.jsonl'
c eq-empty2 '$MW run --script pass.lua --capacity= <in.jsonl'
c eq-on-bool '$MW run --script pass.lua --stats=1 <in.jsonl'
c eq-on-watch '$MW run --script pass.lua --watch=yes <in.jsonl'
for v in 0 -1 abc 1.5 99999999999999999999 " 5" "5 " 0x10 1e3 +3 4294967297; do
  c "capacity[$v]" "\$MW run --script pass.lua --capacity '$v' <in.jsonl"
done
for v in -1 abc 1.5 99999999999999999999 0 18446744073709551615 9223372036854775807; do
  c "timeout[$v]" "\$MW run --script pass.lua --timeout '$v' <in.jsonl"
done
for v in ordered unordered Ordered "" both; do
  c "mode[$v]" "\$MW run --script pass.lua --mode '$v' <in.jsonl"
done
for v in fail skip dead-letter deadletter ""; do
  c "on-error[$v]" "\$MW run --script pass.lua --on-error '$v' <in.jsonl"
done
c dead-letter-no-file '$MW run --script pass.lua --on-error dead-letter <in.jsonl'
c dead-letter-file-no-mode '$MW run --script pass.lua --dead-letter dl.jsonl <in.jsonl'
for v in none fixed:3:10 fixed:0:10 fixed:3 fixed:a:1 exponential:3:1:10:2 exponential:3:1:10:2:full exponential:3:1:10:2:half exponential:3:10:1:2 exponential:3:1:10:0.5 exponential:3:1:10 bogus "" fixed:3:10:extra fixed:-1:10 fixed:3:-5 fixed:1000000:1; do
  c "retry[$v]" "\$MW run --script pass.lua --retry '$v' <in.jsonl"
done
for v in 0 1 10 abc -5 17 100000000000 16777216; do
  c "max-line-bytes[$v]" "\$MW run --script pass.lua --max-line-bytes '$v' <huge.jsonl"
done
for v in 0 -1 abc 50 99999999999; do
  c "cpu-budget[$v]" "\$MW run --script pass.lua --cpu-budget '$v' <in.jsonl"
done
for v in 0 -1 abc 100; do
  c "reload-open-timeout[$v]" "\$MW run --script pass.lua --reload-open-timeout '$v' <in.jsonl"
  c "checkpoint-interval[$v]" "\$MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck --checkpoint-interval '$v'"
  c "max-ooo[$v]" "\$MW run --script pass.lua --event-time t --max-out-of-orderness '$v' <evt.jsonl"
done
c ooo-without-event-time '$MW run --script pass.lua --max-out-of-orderness 5 <in.jsonl'
c event-time-empty '$MW run --script pass.lua --event-time "" <in.jsonl'
c event-time-dots '$MW run --script pass.lua --event-time a..b <in.jsonl'
c tag-gen-empty '$MW run --script pass.lua --tag-generation "" <in.jsonl'
c tag-gen-dot '$MW run --script modify.lua --tag-generation a.b <in.jsonl'
c tag-gen-existing '$MW run --script pass.lua --tag-generation a <in.jsonl'
c tag-gen-watermarks '$MW run --script fanout.lua --tag-generation g <in.jsonl'
c repeated-flag '$MW run --script nope.lua --script pass.lua --capacity 5 --capacity 2 <in.jsonl'
c two-pipelines '$MW run pipeline.lua pipeline.lua'
c positional-after '$MW run --script pass.lua extra.lua <in.jsonl'
c missing-script-file '$MW run --script nope.lua <in.jsonl'
c script-is-dir '$MW run --script . <in.jsonl'
c missing-input '$MW run --script pass.lua --input nope.jsonl'
c input-dir '$MW run --script pass.lua --input .'
c output-dir '$MW run --script pass.lua --input in.jsonl --output .'
c output-noperm 'mkdir -p ro && chmod 500 ro && $MW run --script pass.lua --input in.jsonl --output ro/x/o.jsonl'
c dl-dir '$MW run --script fail.lua --input fails.jsonl --on-error dead-letter --dead-letter .'
c same-in-out '$MW run --script pass.lua --input in.jsonl --output in.jsonl'
c same-in-out-symlink 'ln -s in.jsonl l.jsonl; $MW run --script pass.lua --input in.jsonl --output l.jsonl'
c same-in-redirect '$MW run --script pass.lua --input in.jsonl >>in.jsonl'
c same-stdin-out '$MW run --script pass.lua --output o.jsonl <o.jsonl; cp in.jsonl o2.jsonl; $MW run --script pass.lua --output o2.jsonl <o2.jsonl'
c same-out-dl '$MW run --script pass.lua --input in.jsonl --output o.jsonl --on-error dead-letter --dead-letter o.jsonl'
c same-in-dl '$MW run --script pass.lua --input in.jsonl --on-error dead-letter --dead-letter ./in.jsonl'
c devnull-twice '$MW run --script fail.lua --input fails.jsonl --output /dev/null --on-error dead-letter --dead-letter /dev/null'
c pipeline 'mkdir sub && cp pipeline.lua enrich.lua in.jsonl sub/ && $MW run sub/pipeline.lua; echo rc=$?; cat sub/pout.jsonl'
c pipeline-override 'mkdir sub && cp pipeline.lua enrich.lua in.jsonl sub/ && $MW run sub/pipeline.lua --output - --mode unordered --capacity 1'
c pipeline-flag-before '$MW run --capacity 2 pipeline.lua; cat pout.jsonl'
p() { # name lua-table-body
  c "pipe[$1]" "printf 'return { script = \"pass.lua\", $2 }\n' > p.lua; \$MW run p.lua <in.jsonl"
}
p ok 'mode = "unordered"'
p unknown-key 'modee = "x"'
p bad-mode 'mode = 3'
p bad-capacity 'capacity = "10"'
p neg-capacity 'capacity = -1'
p float-capacity 'capacity = 1.5'
p zero-capacity 'capacity = 0'
p huge-capacity 'capacity = 1e20'
p timeout 'timeout_ms = 5'
p bad-timeout 'timeout_ms = true'
p stats 'stats = true'
p stats-bad 'stats = 1'
p event-time 'event_time = "t", max_out_of_orderness_ms = 100'
p ooo-bad 'event_time = "t", max_out_of_orderness_ms = -100'
p retry-str 'retry = "fixed:2:1"'
p retry-table 'retry = { max_attempts = 2, backoff = "fixed", delay_ms = 1 }'
p retry-table-bad 'retry = { max_attempts = 2, backoff = "fixed", delay = 1 }'
p retry-table-exp 'retry = { max_attempts = 2, backoff = "exponential", initial_delay_ms = 1, max_delay_ms = 5, multiplier = 2, jitter = "bogus" }'
p retry-bad-type 'retry = 5'
p on-error 'on_error = "skip"'
p on-error-bad 'on_error = "ignore"'
p dead-letter 'on_error = "dead-letter", dead_letter = "dl.jsonl"'
p watch 'watch = "yes"'
p tag 'tag_generation = "g"'
p tag-bad 'tag_generation = 1'
p rot 'reload_open_timeout_ms = 0'
p ckpt 'input = "in.jsonl", output = "o.jsonl", checkpoint = { dir = "ck", interval_ms = 50 }'
p ckpt-bad 'input = "in.jsonl", output = "o.jsonl", checkpoint = { dir = "ck", intervalms = 50 }'
p ckpt-str 'input = "in.jsonl", output = "o.jsonl", checkpoint = "ck"'
p ckpt-interval-key 'input = "in.jsonl", output = "o.jsonl", checkpoint = { dir = "ck" }, checkpoint_interval_ms = 20'
p ckpt-both-interval 'input = "in.jsonl", output = "o.jsonl", checkpoint = { dir = "ck", interval_ms = 10 }, checkpoint_interval_ms = 20'
p max-line 'max_line_bytes = 10'
p cpu 'cpu_budget_ms = "x"'
p num-key '[1] = 2'
p script-num 'script = 5'
c pipe-not-table 'echo "return 5" > p.lua; $MW run p.lua <in.jsonl'
c pipe-syntax 'echo "return {" > p.lua; $MW run p.lua <in.jsonl'
c pipe-raises 'echo "error(\"pipe boom\")" > p.lua; $MW run p.lua <in.jsonl'
c pipe-missing '$MW run nope.lua <in.jsonl'
c pipe-no-script 'echo "return { capacity = 2 }" > p.lua; $MW run p.lua <in.jsonl'
c pipe-global 'echo "x = 1 return { script = \"pass.lua\" }" > p.lua; $MW run p.lua <in.jsonl'
c pipe-spin 'echo "while true do end" > p.lua; timeout 5 $MW run p.lua <in.jsonl'
for s in pass enrich fail timeout_ot retry retry_badtab syntax loaderr noinvoke notable openfail globalload osexitload stdinread nope; do
  c "check[$s]" "\$MW check $s.lua"
done
c check-noarg '$MW check'
c check-two '$MW check pass.lua pass.lua'
c check-flag '$MW check --capacity 3 pass.lua'
c check-retry-bad-on 'printf "return { retry = { max_attempts = 0 }, async_invoke = function() end }" > r.lua; $MW check r.lua'
c check-ontimeout-notfn 'printf "return { on_timeout = 5, async_invoke = function() end }" > r.lua; $MW check r.lua'
c check-retry-pred-notfn 'printf "return { retry_on_error = 5, async_invoke = function() end }" > r.lua; $MW check r.lua'
c check-invoke-notfn 'printf "return { async_invoke = 5 }" > r.lua; $MW check r.lua'
c check-index-raises 'printf "return setmetatable({}, { __index = function() error(\"idx\") end })" > r.lua; $MW check r.lua; $MW run --script r.lua <in.jsonl'
c check-require-sibling 'mkdir m && printf "return { v = 1 }" > m/helper.lua && printf "local h = require \"helper\" return { async_invoke = function(r) r.h = h.v return { r } end }" > m/s.lua && $MW check m/s.lua && $MW run --script m/s.lua <in.jsonl'
c check-spinload 'timeout 5 $MW check spinload.lua'
