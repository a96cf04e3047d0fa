# checkpoints, signals, restore, crash
WAITL='waitl() { for _ in $(seq 200); do [ "$(wc -l 2>/dev/null <"$1" || echo 0)" -ge "$2" ] && return 0; sleep 0.05; done; echo "waitl $1 $2 timed out"; }'
for m in ordered unordered; do
  S=; [ $m = unordered ] && S=sort
  c "ckpt-clean[$m]" $S "\$MW run --script slow.lua --mode $m --input crash.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck --checkpoint-interval 50 --capacity 20; echo rc=\$?; ls ck; \$MW run --script slow.lua --mode $m --input crash.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck; echo rc=\$?"
  for sig in INT TERM; do
    c "ckpt-sig$sig[$m]" $S "$WAITL; \$MW run --script hang.lua --mode $m --input hang.jsonl --output o.jsonl --checkpoint-dir ck --capacity 4 & p=\$!; waitl o.jsonl 3; sleep 0.3; kill -$sig \$p; wait \$p; echo rc=\$?; ls ck; cp o.jsonl o1.jsonl; timeout 3 \$MW run --script pass.lua --mode $m --input hang.jsonl --output o.jsonl --checkpoint-dir ck --capacity 4; echo rc=\$?"
    c "nockpt-sig$sig[$m]" $S "$WAITL; \$MW run --script hang.lua --mode $m --input hang.jsonl --timeout 1500 --capacity 4 >o.jsonl & p=\$!; waitl o.jsonl 3; sleep 0.3; kill -$sig \$p; wait \$p; echo rc=\$?"
    c "nockpt-sig2$sig[$m]" $S "$WAITL; \$MW run --script hang.lua --mode $m --input hang.jsonl --capacity 4 >o.jsonl & p=\$!; waitl o.jsonl 3; sleep 0.3; kill -$sig \$p; sleep 0.3; kill -$sig \$p; wait \$p; echo rc=\$?"
    # racy by nature (two signals back to back may be coalesced or not): a DIFF here needs rerunning
    c "ckpt-sig2$sig[$m]" $S "$WAITL; \$MW run --script hang.lua --mode $m --input hang.jsonl --output o.jsonl --checkpoint-dir ck --capacity 4 --checkpoint-interval 100000 & p=\$!; waitl o.jsonl 3; sleep 0.3; kill -$sig \$p; kill -$sig \$p; wait \$p; echo rc=\$?"
  done
  c "crash-restart[$m]" $S "$WAITL; for k in 1 2 3 4 5 6; do \$MW run --script slow.lua --mode $m --input crash.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck --checkpoint-interval 30 --capacity 20 2>/dev/null & p=\$!; sleep 0.\$((RANDOM % 5 + 2)); kill -9 \$p 2>/dev/null; wait \$p 2>/dev/null; done; \$MW run --script slow.lua --mode $m --input crash.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck --checkpoint-interval 30 --capacity 20 2>&1 | grep -v restoring; echo rc=\$?; sed -i 's/\"elapsed_ms\":[0-9]*/E/' dl.jsonl; rm -rf ck"
done
c ckpt-cross-old-new 'for k in 1 2 3; do $OLDMW run --script slow.lua --input crash.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck --checkpoint-interval 30 --capacity 20 2>/dev/null & p=$!; sleep 0.4; kill -9 $p; wait $p 2>/dev/null; done; $MW run --script slow.lua --input crash.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck --capacity 20 2>&1 | grep -v restoring; echo rc=$?; sed -i "s/\"elapsed_ms\":[0-9]*/E/" dl.jsonl; rm -rf ck'
c ckpt-cross-new-old 'for k in 1 2 3; do $NEWMW run --script slow.lua --input crash.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck --checkpoint-interval 30 --capacity 20 2>/dev/null & p=$!; sleep 0.4; kill -9 $p; wait $p 2>/dev/null; done; $MW run --script slow.lua --input crash.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck --capacity 20 2>&1 | grep -v restoring; echo rc=$?; sed -i "s/\"elapsed_ms\":[0-9]*/E/" dl.jsonl; rm -rf ck'
c ckpt-stdin '$MW run --script pass.lua --output o.jsonl --checkpoint-dir ck <in.jsonl'
c ckpt-stdout '$MW run --script pass.lua --input in.jsonl --checkpoint-dir ck'
c ckpt-fifo-in 'mkfifo f; $MW run --script pass.lua --input f --output o.jsonl --checkpoint-dir ck'
c ckpt-fifo-out 'mkfifo f; $MW run --script pass.lua --input in.jsonl --output f --checkpoint-dir ck'
c ckpt-dl-stdout '$MW run --script pass.lua --input in.jsonl --output o.jsonl --on-error dead-letter --dead-letter /dev/stdout --checkpoint-dir ck | cat'
c ckpt-devnull '$MW run --script pass.lua --input in.jsonl --output /dev/null --checkpoint-dir ck'
c ckpt-dir-is-file 'touch ck; $MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck'
c ckpt-dir-missing-parent '$MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir a/b/ck'
c ckpt-dir-ro 'mkdir ck; chmod 500 ck; $MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck; echo rc=$?; chmod 700 ck'
c ckpt-corrupt 'mkdir ck; $MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck; sed -i "s/input_line 4/input_line 3/" ck/checkpoint; $MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck'
c ckpt-truncated '$MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck; head -c 100 ck/checkpoint > x; mv x ck/checkpoint; $MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck'
c ckpt-empty 'mkdir ck; : > ck/checkpoint; $MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck'
c ckpt-garbage 'mkdir ck; echo hello > ck/checkpoint; $MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck'
c ckpt-oldversion 'mkdir ck; printf "moonwait-checkpoint 1\n" > ck/checkpoint; $MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck'
c ckpt-other-pipeline '$MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck; $MW run --script pass.lua --input crlf.jsonl --output o.jsonl --checkpoint-dir ck; $MW run --script pass.lua --input in.jsonl --output o.jsonl --mode unordered --checkpoint-dir ck; $MW run --script pass.lua --input in.jsonl --output o2.jsonl --checkpoint-dir ck; $MW run --script pass.lua --input in.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck'
c ckpt-tmp-leftover 'mkdir ck; echo x > ck/checkpoint.tmp.abcdef; ln -s /nonexistent ck/checkpoint.tmp.zzzzzz; $MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck; ls ck'
c ckpt-symlink-checkpoint 'mkdir ck; ln -s ../in.jsonl ck/checkpoint; $MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck'
# a mid-run checkpoint restored where output/dl/input changed
MID='$MW run --script hang.lua --input hang.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck --capacity 4 & p=$!; for _ in $(seq 100); do [ -s o.jsonl ] && [ "$(wc -l <o.jsonl)" -ge 3 ] && break; sleep 0.05; done; sleep 0.3; kill -INT $p; wait $p; echo rc=$?'
c ckpt-output-gone "$MID; rm o.jsonl; \$MW run --script pass.lua --input hang.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck"
c ckpt-output-short "$MID; : > o.jsonl; \$MW run --script pass.lua --input hang.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck"
c ckpt-output-longer "$MID; echo extra >> o.jsonl; \$MW run --script pass.lua --input hang.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck"
c ckpt-dl-gone "$MID; rm dl.jsonl; \$MW run --script pass.lua --input hang.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck"
c ckpt-input-short "$MID; head -2 hang.jsonl > h2; mv h2 hang.jsonl; \$MW run --script pass.lua --input hang.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck"
c ckpt-input-longer "$MID; echo '{\"i\":99}' >> hang.jsonl; \$MW run --script pass.lua --input hang.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck"
c ckpt-restore-fails "$MID; \$MW run --script fail.lua --input hang.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck; echo rc=\$?; \$MW run --script syntax.lua --input hang.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck; echo rc=\$?; \$MW run --script openfail.lua --input hang.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck"
c ckpt-two-procs '$MW run --script hang.lua --input hang.jsonl --output o.jsonl --checkpoint-dir ck & p=$!; for _ in $(seq 100); do [ -s ck/lock ] && break; sleep 0.05; done; sleep 0.2; $MW run --script hang.lua --input hang.jsonl --output o.jsonl --checkpoint-dir ck; echo rc=$?; kill -TERM $p; wait $p; echo rc=$?'
c ckpt-two-procs-other '$MW run --script hang.lua --input hang.jsonl --output o.jsonl --checkpoint-dir ck & p=$!; for _ in $(seq 100); do [ -s ck/lock ] && break; sleep 0.05; done; sleep 0.2; $MW run --script pass.lua --input in.jsonl --output o2.jsonl --checkpoint-dir ck; echo rc=$?; kill -TERM $p; wait $p; echo rc=$?'
c ckpt-failed-run '$MW run --script fail.lua --input fails.jsonl --output o.jsonl --checkpoint-dir ck; echo rc=$?; ls ck; $MW run --script fail.lua --input fails.jsonl --output o.jsonl --checkpoint-dir ck; echo rc=$?'
c ckpt-malformed-skip '$MW run --script pass.lua --input malformed.jsonl --output o.jsonl --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck; echo rc=$?'
c ckpt-huge-line '$MW run --script pass.lua --input huge.jsonl --output o.jsonl --max-line-bytes 100 --checkpoint-dir ck; echo rc=$?; ls ck'
c ckpt-evt '$MW run --script pass.lua --input evtn.jsonl --output o.jsonl --event-time n.t --max-out-of-orderness 100 --checkpoint-dir ck; echo rc=$?'
c ckpt-openfail '$MW run --script openfail.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck; echo rc=$?; ls ck'
c ckpt-timeout-budget '$MW run --script hang.lua --input hang.jsonl --output o.jsonl --timeout 700 --checkpoint-dir ck --capacity 4 & p=$!; sleep 0.4; kill -INT $p; wait $p; echo rc=$?; sleep 0.5; $MW run --script hang.lua --input hang.jsonl --output o.jsonl --timeout 700 --on-error dead-letter --dead-letter dl.jsonl --checkpoint-dir ck --capacity 4; echo rc=$?'
c ckpt-dir-unreadable 'if runuser -u nobody -- true 2>/dev/null; then chmod 755 .; mkdir ck; chmod 300 ck; chown -R nobody .; runuser -u nobody -- $MW run --script pass.lua --input in.jsonl --output o.jsonl --checkpoint-dir ck; echo rc=$?; chmod 700 ck; fi'
