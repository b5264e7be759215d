package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

type etcdMember = etcdserverpb.Member

// Changing a running cluster's members, one at a time, as etcd does it:
// keyhole cluster add NAME=PEER_URL tells the members of a new one, which
// then starts with --cluster-state existing and the --cluster-peers value
// add printed; keyhole cluster remove NAME takes one out, such as a dead
// VM's, before its replacement is added. A member keeps its place while it
// restarts: neither is needed for a restart.

// The values of --cluster-state, as etcd names them.
const (
	clusterStateNew      = "new"      // the members named by --cluster-peers start a cluster together
	clusterStateExisting = "existing" // this member joins a running cluster, after keyhole cluster add
)

// clusterAdd adds the member spec (NAME=PEER_URL) to the cluster and
// prints how to start it.
func clusterAdd(ctx context.Context, cli *clientv3.Client, spec string, w io.Writer) error {
	peers, err := parsePeers(spec)
	if err != nil || len(peers) != 1 {
		return usageErrorf("cluster", "add %q: want one NAME=PEER_URL, such as d=https://10.0.0.4:2380", spec)
	}
	name, _, _ := strings.Cut(spec, "=")
	peerURL := peers[name]
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("cluster members: %w", err)
	}
	if slices.ContainsFunc(ml.Members, func(m *etcdMember) bool { return m.Name == name }) {
		return fmt.Errorf("the cluster has a member named %s already: remove it first (keyhole cluster remove %s)", name, name)
	}
	resp, err := cli.MemberAdd(ctx, []string{peerURL})
	if errors.Is(err, rpctypes.ErrUnhealthy) {
		return fmt.Errorf("adding %s: %w (etcd adds a member once every member has been reachable for 5 s: try again then)", name, err)
	}
	if err != nil {
		return fmt.Errorf("adding %s: %w", name, err)
	}
	var all []string
	for _, m := range resp.Members {
		n := m.Name
		if m.ID == resp.Member.ID {
			n = name // it has no name until it starts
		}
		if n != "" && len(m.PeerURLs) > 0 {
			all = append(all, n+"="+m.PeerURLs[0])
		}
	}
	slices.Sort(all)
	fmt.Fprintf(w, "keyhole: %s is a member of the cluster; start it now, on a new --db, with\n"+
		"  --node-name %s --cluster-state existing --cluster-peers %s\n"+
		"and its --cluster-addr; until it runs, the cluster needs a quorum of %d members.\n",
		name, name, strings.Join(all, ","), len(resp.Members)/2+1)
	return nil
}

// clusterRemove takes the member name out of the cluster.
func clusterRemove(ctx context.Context, cli *clientv3.Client, name string, w io.Writer) error {
	ml, err := cli.MemberList(ctx)
	if err != nil {
		return fmt.Errorf("cluster members: %w", err)
	}
	i := slices.IndexFunc(ml.Members, func(m *etcdMember) bool { return m.Name == name })
	if i < 0 {
		return fmt.Errorf("the cluster has no member named %s", name)
	}
	if _, err := cli.MemberRemove(ctx, ml.Members[i].ID); err != nil {
		return fmt.Errorf("removing %s: %w", name, err)
	}
	fmt.Fprintf(w, "keyhole: %s is no longer a member of the cluster; its node, if it still runs, fails closed\n", name)
	return nil
}
