// Package etcdtest starts a real etcd cluster on loopback for tests: N
// members (default 3), each a separate process of the etcd server binary
// (Debian's etcd-server, /usr/bin/etcd), data directories under
// t.TempDir(), free ports, killed by t.Cleanup.
//
// Issue 15 keeps revocations and the inventory in etcd; what a gateway does
// when a member dies, when a quorum is lost, or when etcd compacted the
// revisions it was watching can only be shown against real etcd, not a
// fake. Tests stop and restart members, stop a quorum, and compact through
// this package.
//
// Clients built here dial exactly the members' client URLs: no Sync, no
// AutoSyncInterval, no RejectOldCluster (the 3.7 client would reject the
// 3.4 server as too old).
//
// Without the etcd binary a test is skipped on a workstation and fails
// when CI is set (.ci/run installs etcd-server). Nothing here is for
// production use.
package etcdtest
