package blockstore

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// frameCodec turns blocks into frame records and frames back into
// plaintext: zstd compression and, in an encrypted store, sealing (the
// frame layout is in pack.go and doc.go). Safe for concurrent use.
type frameCodec struct {
	enc  *zstd.Encoder // nil in a codec that only reads
	dec  *zstd.Decoder
	seal *sealer // nil: not encrypted
}

// newFrameCodec returns a codec; an encoder is made only for writing.
func newFrameCodec(seal *sealer, write bool) (*frameCodec, error) {
	c := &frameCodec{seal: seal}
	if write {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderCRC(false),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithWindowSize(1<<20))
		if err != nil {
			return nil, fmt.Errorf("zstd encoder: %w", err)
		}
		c.enc = enc
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithDecoderMaxMemory(maxFramePlain))
	if err != nil {
		if c.enc != nil {
			c.enc.Close()
		}
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	c.dec = dec
	return c, nil
}

func (c *frameCodec) close() {
	if c.enc != nil {
		c.enc.Close()
	}
	c.dec.Close()
}

// encode groups blocks[i] for i in want into frames of kind k, compresses
// and seals them, and returns the records (from getBuf: putBuf them when
// written) and each record's entries.
func (c *frameCodec) encode(k kind, blocks [][]byte, ids []ID, want []int) (recs [][]byte, recIDs [][]frameEntry) {
	for start := 0; start < len(want); {
		end, plain := start, 0
		for end < len(want) && (end == start || plain+len(blocks[want[end]]) <= frameTarget) && end-start < maxFrameBlocks {
			plain += len(blocks[want[end]])
			end++
		}
		entries := make([]frameEntry, 0, end-start)
		buf := getBuf(plain)
		for _, i := range want[start:end] {
			entries = append(entries, frameEntry{id: ids[i], len: uint32(len(blocks[i]))})
			buf = append(buf, blocks[i]...)
		}
		comp := c.enc.EncodeAll(buf, getBuf(len(buf)))
		codec, payload := byte(codecRaw), buf
		if len(comp) <= len(buf)-len(buf)/8 {
			codec, payload = codecZstd, comp
		}
		recBuf := getBuf(frameHeaderSize + len(entries)*frameEntrySize + len(payload) + sealOver + frameTrailerSize)
		if c.seal != nil {
			recs = append(recs, encodeSealedFrame(recBuf, c.seal, k, codec, entries, uint32(plain), payload))
		} else {
			recs = append(recs, encodeFrame(recBuf, k, codec, entries, uint32(plain), payload))
		}
		putBuf(buf)
		putBuf(comp)
		recIDs = append(recIDs, entries)
		start = end
	}
	return recs, recIDs
}

// plain returns the plaintext of fr, appended to dst, or (raw and not
// sealed) fr.payload itself. scratch holds an opened payload before
// decompression.
func (c *frameCodec) plain(fr frame, dst []byte, scratch *[]byte) ([]byte, error) {
	payload := fr.payload
	if fr.codec&codecSealed != 0 {
		if c.seal == nil {
			return nil, corruptf("sealed frame in a store that is not encrypted")
		}
		if fr.codec&^codecSealed == codecRaw {
			return c.seal.openFrame(dst, payload, fr.head)
		}
		p, err := c.seal.openFrame((*scratch)[:0], payload, fr.head)
		if err != nil {
			return nil, err
		}
		*scratch, payload = p, p
	} else if c.seal != nil {
		return nil, corruptf("frame not sealed in an encrypted store")
	}
	if fr.codec&^codecSealed == codecRaw {
		return payload, nil
	}
	plain, err := c.dec.DecodeAll(payload, dst)
	if err != nil || len(plain) != int(fr.plain) {
		if err == nil {
			err = fmt.Errorf("decompressed %d bytes, want %d", len(plain), fr.plain)
		}
		return nil, fmt.Errorf("%w: frame does not decompress: %v", errCorrupt, err)
	}
	return plain, nil
}

// bufPool recycles frame-sized buffers: ingest would otherwise allocate
// several times the data it stores.
var bufPool sync.Pool

// getBuf returns an empty buffer with room for n bytes.
func getBuf(n int) []byte {
	if b, ok := bufPool.Get().(*[]byte); ok && cap(*b) >= n {
		return (*b)[:0]
	}
	return make([]byte, 0, max(n, frameTarget+frameTarget/8+4096))
}

func putBuf(b []byte) {
	if cap(b) <= 4*frameTarget {
		bufPool.Put(&b)
	}
}
