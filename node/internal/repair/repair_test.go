package repair

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/mesh"
	"github.com/lifeboat-dr/lifeboat/mesh/meshtest"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
	"github.com/lifeboat-dr/lifeboat/node/internal/streams"
)

// mapStore is a store of blocks by ID; bad IDs read as damage.
type mapStore struct {
	key    blockstore.Key
	blocks map[blockstore.ID][]byte
	lie    map[blockstore.ID]bool // served with the wrong bytes
}

func (m *mapStore) DedupKey() blockstore.Key { return m.key }
func (m *mapStore) Get(ctx context.Context, id blockstore.ID) ([]byte, error) {
	b, ok := m.blocks[id]
	if !ok {
		return nil, &blockstore.CorruptError{Block: id, Err: errors.New("missing")}
	}
	if m.lie[id] {
		return append([]byte("not "), b...), nil
	}
	return b, nil
}

const policy = `[[site]]
name = "dc1"
[[site]]
name = "dc2"
[[site]]
name = "dc3"
[[service]]
name = "web"
primary = "dc1"
  [[service.server]]
  name = "s1"
    [[service.server.volume]]
    name = "disk"
    path = "/dev/x"
    size = "256KiB"
  [[service.copy]]
  site = "dc2"
  tier = "warm"
`

type peer struct {
	name mesh.NodeID
	site mesh.Site
	ep   *mesh.Endpoint
	st   *mapStore
	f    *Fetcher
}

// threeNodes starts dc1-n1, dc2-n1 and dc3-n1 on a test network, each
// serving repair requests from its map store.
func threeNodes(t *testing.T) (map[mesh.NodeID]*peer, *catalog.FSM) {
	t.Helper()
	ca := meshtest.CA(t)
	nw := meshtest.NewNet()
	fsm := catalog.NewFSM()
	pol, err := config.ParseCluster("p.toml", []byte(policy))
	if err != nil {
		t.Fatal(err)
	}
	cmds := []*catalog.Command{{Op: catalog.OpPolicy, Policy: &catalog.PolicyRecord{Cluster: pol}}}
	var key blockstore.Key
	key[0] = 7
	peers := map[mesh.NodeID]*peer{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for _, s := range []mesh.Site{"dc1", "dc2", "dc3"} {
		name := mesh.NodeID(string(s) + "-n1")
		pc, err := nw.Node(name, s).ListenPacket("127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ep, err := mesh.NewEndpoint(mesh.EndpointOptions{Creds: ca.Node(name, s), Conn: pc})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ep.Close() })
		p := &peer{name: name, site: s, ep: ep, st: &mapStore{key: key, blocks: map[blockstore.ID][]byte{}, lie: map[blockstore.ID]bool{}}}
		p.f, err = New(Options{Name: name, Site: s, Store: p.st, Catalog: fsm, Dial: ep.Dial, Timeout: 10 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		peers[name] = p
		cmds = append(cmds, &catalog.Command{Op: catalog.OpNodeUpsert, Node: &catalog.NodeInfo{Name: name, Site: s, Role: "node", QUIC: ep.Addr().String()}})
		go streams.Serve(ctx, streams.Options{Accept: ep.Accept}, mesh.KindBlocks, "repair", func(ctx context.Context, st *mesh.Stream) error {
			fr := mesh.NewFrameReader(st, mesh.KindBlocks.MaxFrame())
			b, err := fr.Expect(mesh.FrameReplHello)
			if err != nil {
				return err
			}
			h, err := mesh.DecodeReplHello(b)
			if err != nil {
				return streams.Refuse(mesh.CodeBadRequest, "%v", err)
			}
			return p.f.Serve(ctx, st, fr, h)
		})
	}
	for i, c := range cmds {
		b, err := catalog.EncodeCommand(c)
		if err != nil {
			t.Fatal(err)
		}
		if res := fsm.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: b}).(catalog.ApplyResult); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	return peers, fsm
}

func TestFetchFindsEachBlockWhereItIs(t *testing.T) {
	t.Parallel()
	peers, _ := threeNodes(t)
	h, _ := blockstore.NewHasher(peers["dc1-n1"].st.key)
	var ids []blockstore.ID
	data := map[blockstore.ID][]byte{}
	for i := range 600 { // more than one request's worth (MaxRepairIDs)
		b := []byte(fmt.Sprintf("block %d of the volume", i))
		id := h.ID(b)
		ids = append(ids, id)
		data[id] = b
		switch {
		case i%3 == 0:
			peers["dc1-n1"].st.blocks[id] = b
		case i%3 == 1:
			peers["dc3-n1"].st.blocks[id] = b
		}
	}
	// dc1 lies about one block dc3 holds soundly: the hash check skips
	// the lie and dc3's copy is used.
	liar := ids[1]
	peers["dc1-n1"].st.blocks[liar], peers["dc1-n1"].st.lie[liar] = data[liar], true
	got, err := peers["dc2-n1"].f.Fetch(context.Background(), "web", ids)
	if err == nil {
		t.Error("fetch of blocks no node holds returned no error")
	}
	for i, id := range ids {
		f, ok := got[id]
		switch {
		case i%3 == 2:
			if ok {
				t.Errorf("block %d held by no node came back", i)
			}
		case !ok || string(f.Data) != string(data[id]):
			t.Errorf("block %d: got %q, %v", i, f.Data, ok)
		case i%3 == 0 && f.From != "dc1-n1", i%3 == 1 && f.From != "dc3-n1":
			t.Errorf("block %d from %s", i, f.From)
		}
	}
	// One block through the store's path.
	b, err := peers["dc2-n1"].f.One(context.Background(), ids[0])
	if err != nil || string(b) != string(data[ids[0]]) {
		t.Errorf("One: %q, %v", b, err)
	}
	if _, err := (*Fetcher)(nil).One(context.Background(), ids[0]); err == nil {
		t.Error("a nil fetcher found a block")
	}
}

func TestServingDoesNotAskFurther(t *testing.T) {
	t.Parallel()
	peers, _ := threeNodes(t)
	ctx := context.WithValue(context.Background(), servingKey{}, true)
	if _, err := peers["dc2-n1"].f.Fetch(ctx, "", []blockstore.ID{{1}}); err == nil {
		t.Error("a fetch while serving a repair asked other nodes")
	}
}

func TestPeersNearestFirst(t *testing.T) {
	t.Parallel()
	peers, fsm := threeNodes(t)
	b, _ := catalog.EncodeCommand(&catalog.Command{Op: catalog.OpHolders, Holders: []catalog.Holder{{Service: "web", Site: "dc2", Node: "dc2-n1"}}})
	fsm.Apply(&raft.Log{Index: 100, Type: raft.LogCommand, Data: b})
	b, _ = catalog.EncodeCommand(&catalog.Command{Op: catalog.OpNodeUpsert, Node: &catalog.NodeInfo{Name: "dc1-n2", Site: "dc1", Role: "node", QUIC: "127.0.0.1:1"}})
	fsm.Apply(&raft.Log{Index: 101, Type: raft.LogCommand, Data: b})
	b, _ = catalog.EncodeCommand(&catalog.Command{Op: catalog.OpNodeUpsert, Node: &catalog.NodeInfo{Name: "dc1-w", Site: "dc1", Role: "witness", QUIC: "127.0.0.1:2"}})
	fsm.Apply(&raft.Log{Index: 102, Type: raft.LogCommand, Data: b})
	var names []mesh.NodeID
	for _, ni := range peers["dc1-n1"].f.peers("web") {
		names = append(names, ni.Name)
	}
	if want := []mesh.NodeID{"dc1-n2", "dc2-n1", "dc3-n1"}; !slices.Equal(names, want) {
		t.Errorf("peers = %v, want %v (own site, then the service's holders, never a witness or itself)", names, want)
	}
}

// A node certificate of a site that keeps nothing of the named service is
// refused; an agent certificate is refused whatever it names.
func TestServeRefuses(t *testing.T) {
	t.Parallel()
	peers, _ := threeNodes(t)
	_, err := peers["dc3-n1"].f.ask(context.Background(), catalog.NodeInfo{Name: "dc1-n1", QUIC: peers["dc1-n1"].ep.Addr().String()}, "web", []blockstore.ID{{1}})
	var re *mesh.RemoteError
	if !errors.As(err, &re) || re.Code != mesh.CodeForbidden {
		t.Errorf("dc3 asking for web's blocks: %v, want forbidden (dc3 keeps nothing of web)", err)
	}
}
