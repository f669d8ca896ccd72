// Package benchfailover measures failover: the time from SIGKILL of a node
// that holds an EX region lock to the moment a survivor's write under that
// lock is acknowledged, over real shoald processes, killing nodes drawn at
// random whatever their role (a row over all victims, and rows for the
// victims that hosted the etcd leader, were the recovery coordinator, or
// neither), with persistent
// reservation fencing on tgtd legs (direct failure detection) and in
// lease-only mode on file legs; and, as the peer measured in the same run,
// the takeover time of etcd's own concurrency.Mutex with the same session
// TTL when its holder process is SIGKILLed.
//
//	make bench-failover        # or:
//	go test ./tools/benchfailover -run '^$' -bench . -benchtime 1x -args -runs 20 -out bench-results/failover.txt
//
// To trace one kind of failover step by step, kill only victims of one role
// and keep every node's debug log:
//
//	go test ./tools/benchfailover -run '^$' -bench . -benchtime 1x -v -args \
//	    -runs 5 -victims leader -modes reservations -logs failover-logs
//
// -victims is any (the default, and the only choice for the table's overall
// row), leader (the etcd leader's host), coordinator or neither; -modes
// picks among reservations, lease and mutex; -node-args passes further
// shoald arguments to every node (say --config FILE with an etcd block of
// other heartbeat/election timings). Each run's line gives the kill and the
// waiter's acknowledged write in wall-clock time, to find in the logs.
package benchfailover
