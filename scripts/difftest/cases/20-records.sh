# input framing, malformed lines, records and values, watermarks, event time
for m in ordered unordered; do
  S=; [ $m = unordered ] && S=sort
  c "basic[$m]" $S "\$MW run --script enrich.lua --mode $m --input in.jsonl"
  c "stats[$m]" $S "\$MW run --script enrich.lua --mode $m --stats --input in.jsonl --output o.jsonl"
  c "many[$m]" $S "\$MW run --script enrich.lua --mode $m --capacity 7 <many.jsonl"
  c "many-cap1[$m]" "\$MW run --script enrich.lua --mode $m --capacity 1 <many.jsonl"
  for oe in fail skip dead-letter; do
    c "malformed[$m,$oe]" $S "\$MW run --script pass.lua --mode $m --on-error $oe --dead-letter dl.jsonl --stats <malformed.jsonl"
    c "fails[$m,$oe]" $S "\$MW run --script fail.lua --mode $m --on-error $oe --dead-letter dl.jsonl --stats <fails.jsonl"
    c "deep[$m,$oe]" "\$MW run --script pass.lua --mode $m --on-error $oe --dead-letter dl.jsonl <deep.jsonl"
    c "huge[$m,$oe]" "\$MW run --script pass.lua --mode $m --on-error $oe --dead-letter dl.jsonl --max-line-bytes 100 <huge.jsonl"
    c "huge-file[$m,$oe]" "\$MW run --script pass.lua --mode $m --on-error $oe --dead-letter dl.jsonl --max-line-bytes 100 --input huge.jsonl"
    c "evt-bad[$m,$oe]" "\$MW run --script pass.lua --mode $m --on-error $oe --dead-letter dl.jsonl --event-time t --max-out-of-orderness 300 <evt.jsonl"
  done
  c "empty[$m]" "\$MW run --script pass.lua --mode $m <empty.jsonl"
  c "nonl[$m]" "\$MW run --script modify.lua --mode $m <nonl.jsonl"
  c "crlf[$m]" "\$MW run --script pass.lua --mode $m <crlf.jsonl; \$MW run --script modify.lua --mode $m <crlf.jsonl"
  c "blanks[$m]" "\$MW run --script enrich.lua --mode $m <blanks.jsonl"
  c "evt[$m]" "head -5 evt.jsonl | \$MW run --script pass.lua --mode $m --event-time t --max-out-of-orderness 300"
  c "evt-nested[$m]" "\$MW run --script pass.lua --mode $m --event-time n.t --max-out-of-orderness 100 <evtn.jsonl"
  c "evt-missing[$m]" "\$MW run --script pass.lua --mode $m --event-time zz <in.jsonl"
  c "evt-ooo0[$m]" "\$MW run --script pass.lua --mode $m --event-time n.t <evtn.jsonl"
  c "modify[$m]" "\$MW run --script modify.lua --mode $m <mod.jsonl"
  c "int64[$m]" "\$MW run --script modify.lua --mode $m <int64.jsonl; \$MW run --script pass.lua --mode $m <int64.jsonl"
  c "fanout[$m]" "\$MW run --script fanout.lua --mode $m <int64.jsonl"
  c "bigfanout[$m]" "echo '{\"n\":50000}' | \$MW run --script fanout.lua --mode $m | md5sum"
  c "jsonmod[$m]" "\$MW run --script jsonmod.lua --mode $m <json.jsonl"
  c "stdinread[$m]" "\$MW run --script stdinread.lua --mode $m <in.jsonl; \$MW run --script stdinread.lua --mode $m --input in.jsonl </dev/null"
  c "log[$m]" "\$MW run --script openclose_log.lua --mode $m <in.jsonl; MOONWAIT_LOG_LEVEL=debug \$MW run --script openclose_log.lua --mode $m <in.jsonl; MOONWAIT_LOG_LEVEL=error \$MW run --script openclose_log.lua --mode $m <in.jsonl; MOONWAIT_LOG_LEVEL=bogus \$MW run --script openclose_log.lua --mode $m <in.jsonl"
  c "timeout[$m]" $S "\$MW run --script timeout.lua --mode $m --timeout 100 --on-error dead-letter --dead-letter dl.jsonl --stats <to.jsonl"
  c "timeout-fail[$m]" "\$MW run --script timeout.lua --mode $m --timeout 100 <to.jsonl"
  c "timeout-ot[$m]" $S "\$MW run --script timeout_ot.lua --mode $m --timeout 100 --on-error dead-letter --dead-letter dl.jsonl --stats <to.jsonl"
  c "timeout-ot-skip[$m]" $S "\$MW run --script timeout_ot.lua --mode $m --timeout 100 --on-error skip --stats <to.jsonl"
  c "timeout-ot-fail[$m]" "\$MW run --script timeout_ot.lua --mode $m --timeout 100 <to.jsonl"
  c "timeout0[$m]" "head -3 to.jsonl | \$MW run --script timeout.lua --mode $m --timeout 0"
  for oe in fail skip dead-letter; do
    c "retry[$m,$oe]" $S "\$MW run --script retry.lua --mode $m --on-error $oe --dead-letter dl.jsonl --stats <retry.jsonl"
    c "spin[$m,$oe]" "\$MW run --script spin.lua --mode $m --cpu-budget 200 --on-error $oe --dead-letter dl.jsonl <spin.jsonl"
  done
  c "retry-flag[$m]" $S "\$MW run --script retry.lua --mode $m --retry fixed:2:1 --on-error dead-letter --dead-letter dl.jsonl --stats <retry.jsonl"
  c "retry-none[$m]" $S "\$MW run --script retry.lua --mode $m --retry none --on-error dead-letter --dead-letter dl.jsonl --stats <retry.jsonl"
  c "retry-exp[$m]" $S "\$MW run --script retry_exp.lua --mode $m --on-error dead-letter --dead-letter dl.jsonl --stats <rexp.jsonl"
  c "retry-exp-flag[$m]" $S "\$MW run --script retry_exp.lua --mode $m --retry exponential:3:1:4:3 --on-error dead-letter --dead-letter dl.jsonl --stats <rexp.jsonl"
  c "retry-badtab[$m]" "\$MW run --script retry_badtab.lua --mode $m <in.jsonl"
  c "retry-timeout[$m]" $S "\$MW run --script retry_exp.lua --mode $m --retry fixed:10:100 --timeout 150 --on-error dead-letter --dead-letter dl.jsonl --stats <rexp.jsonl"
  for s in openfail openraise closefail closeraise loaderr syntax noinvoke notable globalload osexitload; do
    c "script[$s,$m]" "\$MW run --script $s.lua --mode $m <in.jsonl"
  done
done
c closefail-after-fail '$MW run --script closefail.lua <malformed.jsonl'
c closeraise-after-fail '$MW run --script closeraise.lua <malformed.jsonl'
c nul-only 'printf "\0\n{\"a\":1}\n" | $MW run --script pass.lua --on-error dead-letter --dead-letter dl.jsonl'
c cr-only 'printf "{\"a\":1}\r{\"a\":2}\n\r\n" | $MW run --script pass.lua --on-error dead-letter --dead-letter dl.jsonl'
c no-nl-malformed 'printf "{\"a\":1}\n{bad" | $MW run --script pass.lua --on-error dead-letter --dead-letter dl.jsonl'
c no-nl-huge 'printf "{\"a\":1}\n{\"s\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}" | $MW run --script pass.lua --max-line-bytes 20'
c huge-exact 'printf "{\"s\":\"xxxxxxxxxxx\"}\n{\"s\":\"xxxxxxxxxxxx\"}\n" | $MW run --script pass.lua --max-line-bytes 18; printf "{\"s\":\"xxxxxxxxxxx\"}\r\n" | $MW run --script pass.lua --max-line-bytes 18'
c huge-blank 'printf "{\"a\":1}\n                                               \n{\"a\":2}\n" | $MW run --script pass.lua --max-line-bytes 20'
c huge-default 'python3 -c "print(\"{\\\"s\\\":\\\"\" + \"x\"*17000000 + \"\\\"}\")" | $MW run --script pass.lua | wc -c'
c wm-only 'printf "{\"\$watermark\": 5}\n{\"\$watermark\": 3}\n{\"\$watermark\":-9223372036854775808}\n{\"\$watermark\":9223372036854775807}\n{\"\$watermark\":9223372036854775808}\n" | $MW run --script pass.lua'
c wm-forms 'printf "{\"\$watermark\":1e3}\n{ \"\$watermark\" : 7 }\n{\"\$watermark\":8.0}\n{\"\$watermark\":-1}\n{\"\$watermark\":9}\r\n{\"\$watermark\":null}\n{\"\$watermarks\":10}\n" | $MW run --script pass.lua --on-error dead-letter --dead-letter dl.jsonl'
c wm-unordered 'printf "{\"d\":50,\"i\":1}\n{\"i\":2}\n{\"\$watermark\":5}\n{\"i\":3}\n{\"d\":30,\"i\":4}\n{\"\$watermark\":6}\n{\"i\":5}\n" | $MW run --script enrich.lua --mode unordered'
c wm-cap1 'printf "{\"i\":1}\n{\"\$watermark\":5}\n{\"\$watermark\":6}\n{\"i\":3}\n" | $MW run --script enrich.lua --capacity 1 --mode unordered'
c fanout-wm-tag 'printf "{\"n\":3,\"g\":1}\n{\"\$watermark\":5}\n" | $MW run --script fanout.lua --tag-generation g'
c tag-replaces 'printf "{\"g\":\"old\",\"a\":1}\n{\"a\":2,\"g\":{\"x\":1}}\n" | $MW run --script pass.lua --tag-generation g'
c dup-keys 'printf "{\"a\":1,\"a\":2,\"b\":3}\n{\"a\":1,\"b\":2,\"a\":3}\n" | $MW run --script pass.lua; printf "{\"a\":1,\"a\":2,\"b\":3}\n" | $MW run --script modify.lua'
c whitespace-record 'printf "  {  \"a\" :  1 }  \n\t{\"a\":2}\t\n" | $MW run --script pass.lua --on-error dead-letter --dead-letter dl.jsonl'
c unicode 'printf "{\"a\":\"\\u00e9\\ud83d\\ude00/\\/\\u0000\",\"b\":\"\xc3\xa9\"}\n" | $MW run --script modify.lua; printf "{\"a\":\"\\u00e9\\ud83d\\ude00/\\/\\u0000\",\"b\":\"\xc3\xa9\"}\n" | $MW run --script pass.lua'
c numbers 'printf "{\"a\":[0,-0,0.0,-0.0,1E5,1e-5,123456789012345678901234567890,0.1,1.7976931348623157e308,4.9e-324,2e-400]}\n" | $MW run --script modify.lua --on-error dead-letter --dead-letter dl.jsonl'
c dl-invalid-utf8 'printf "{\"a\":\"\xff\"}\n{\"a\":\"\xe2\x82\"}\n\xc3\n" | $MW run --script pass.lua --on-error dead-letter --dead-letter dl.jsonl'
c stdout-closed '$MW run --script enrich.lua <many.jsonl | head -1'
c stdout-closed-big 'yes "{\"a\":1}" | head -200000 | $MW run --script pass.lua | head -1; echo "${PIPESTATUS[2]}"'
c stdout-closed-stats 'yes "{\"a\":1}" | head -200000 | $MW run --script openclose_log.lua --stats 2>&1 >/dev/null | grep -v progress | tail -3; yes "{\"a\":1}" | head -200000 | $MW run --script closefail.lua | head -1; echo "${PIPESTATUS[2]}"'
c stdout-closed-fifo 'mkfifo f; (head -c 10 f >/dev/null) & yes "{\"a\":1}" | head -200000 | $MW run --script pass.lua --output f; echo rc=$?; wait'
c dl-closed-fifo 'mkfifo f; (head -c 10 f >/dev/null) & yes "{\"bad\":1}" | head -200000 | $MW run --script fail.lua --on-error dead-letter --dead-letter f >/dev/null; echo rc=$?; wait'
c fifo-input 'mkfifo f; (cat in.jsonl >f) & $MW run --script enrich.lua --input f; wait'
c output-devfull '$MW run --script pass.lua --input in.jsonl --output /dev/full'
c output-devfull-stdout '$MW run --script pass.lua --input in.jsonl >/dev/full'
c dl-devfull '$MW run --script fail.lua --input fails.jsonl --on-error dead-letter --dead-letter /dev/full'
c output-truncated 'echo junkjunkjunk > o.jsonl; $MW run --script pass.lua --input in.jsonl --output o.jsonl'
c dl-truncated 'echo junk > dl.jsonl; $MW run --script fail.lua --input fails.jsonl --on-error dead-letter --dead-letter dl.jsonl'
c input-stdin-dash '$MW run --script pass.lua --input - <in.jsonl'
c output-dash '$MW run --script pass.lua --input in.jsonl --output -'
c stdin-closed '$MW run --script pass.lua <&-'
c stdout-closed-fd '$MW run --script pass.lua --input in.jsonl >&-'
c stderr-closed '$MW run --script fail.lua --input fails.jsonl 2>&-; echo rc=$?'
