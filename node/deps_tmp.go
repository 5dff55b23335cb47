package node

// Temporary: keeps the mesh dependencies in go.mod while issue 3 is built.
import (
	_ "github.com/hashicorp/memberlist"
	_ "github.com/hashicorp/raft"
	_ "github.com/hashicorp/raft-boltdb/v2"
	_ "github.com/pelletier/go-toml/v2"
	_ "github.com/quic-go/quic-go"
	_ "golang.org/x/time/rate"
)
