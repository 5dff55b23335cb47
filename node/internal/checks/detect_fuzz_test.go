package checks

import (
	"bytes"
	"testing"

	"github.com/lifeboat-dr/lifeboat/internal/bootimg"
)

// FuzzDetect: any first sectors give partitions inside the volume and no
// panic.
func FuzzDetect(f *testing.F) {
	bs, _ := bootimg.BootSector("x", 0x83, 2048, 4096)
	f.Add(bs[:])
	f.Add(append(make([]byte, 1024+0x38), 0x53, 0xEF))
	f.Add([]byte("XFSB"))
	gpt := bs
	gpt[446+4] = 0xEE
	f.Add(gpt[:])
	f.Fuzz(func(t *testing.T, b []byte) {
		size := int64(len(b)) * 8
		parts, _ := Detect(bytes.NewReader(b), size)
		for _, p := range parts {
			if p.Offset < 0 || p.Size < 0 || p.Offset+p.Size > size {
				t.Fatalf("partition %+v outside a volume of %d bytes", p, size)
			}
		}
	})
}
