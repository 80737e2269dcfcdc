// Package etcdtest starts a real etcd cluster on loopback for tests: N
// members (default 3), each a separate process of the etcd server binary
// (Debian's etcd-server, /usr/bin/etcd, 3.4.23), data directories under
// t.TempDir(), free ports, killed by t.Cleanup.
//
// Issue 15 keeps revocations and the inventory in etcd; what a gateway does
// when a member dies, when a quorum is lost, or when etcd compacted the
// revisions it was watching can only be shown against real etcd, not a
// fake. Tests Kill, Stop, Pause and Start members, StopQuorum and
// StartStopped, and CompactNow through this package; internal/lbtest puts
// a TCP proxy in front of the members when a test needs to cut the path to
// a healthy cluster. A cluster takes 1 to 3 seconds to start (a leader
// election), so tests may share one, each under its own Prefix.
//
// Clients built here dial exactly the members' client URLs: no Sync, no
// AutoSyncInterval, no RejectOldCluster (the 3.7 client would reject the
// 3.4 server as too old). Two properties of etcd 3.4.23 a store backend
// must live with: a write issued while a leader election runs can fail
// with "request timed out" after about 7s, and a requested progress
// notification may run ahead of events still queued for a slow watcher
// (etcd issue 15220, fixed in 3.4.24 and 3.5.8).
//
// Without the etcd binary a test is skipped on a workstation and fails
// when CI is set (.ci/run installs etcd-server). Nothing here is for
// production use.
package etcdtest
