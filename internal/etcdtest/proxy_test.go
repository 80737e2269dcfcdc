package etcdtest

import (
	"net/url"
	"slices"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/nefia/nefia/internal/lbtest"
)

// TestClientThroughProxyStaysOnProxy: a client configured with one
// load-balancer address in front of the members keeps dialling only that
// address through writes, watches and a member loss, as issue 15 requires
// of the etcd backend; Sync, by contrast, replaces it with the members'
// own URLs, the wandering a store backend must not do.
func TestClientThroughProxyStaysOnProxy(t *testing.T) {
	t.Parallel()
	c := Start(t, Options{})
	var hosts []string
	for _, ep := range c.Endpoints() {
		u, err := url.Parse(ep)
		if err != nil {
			t.Fatal(err)
		}
		hosts = append(hosts, u.Host)
	}
	proxy := []string{"http://" + lbtest.Start(t, hosts)}

	cfg := c.ClientConfig()
	cfg.Endpoints = proxy
	cli, err := clientv3.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := ctxT(t, 60*time.Second)
	wch := cli.Watch(ctx, "k")
	put(t, cli, "k", "1")
	c.Kill(0)
	c.WaitReady()
	put(t, cli, "k", "2")
	for _, want := range []string{"1", "2"} {
		select {
		case wr := <-wch:
			if wr.Err() != nil || len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != want {
				t.Fatalf("watch through the proxy: %v %v, want value %s", wr.Err(), wr.Events, want)
			}
		case <-ctx.Done():
			t.Fatalf("no watch event %s through the proxy", want)
		}
	}
	if got := cli.Endpoints(); !slices.Equal(got, proxy) {
		t.Errorf("client endpoints %v, want only the proxy %v", got, proxy)
	}

	if err := cli.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got, members := slices.Sorted(slices.Values(cli.Endpoints())), slices.Sorted(slices.Values(c.Endpoints()))
	if !slices.Equal(got, members) {
		t.Errorf("after Sync: %v, want the members' URLs %v", got, members)
	}
}
