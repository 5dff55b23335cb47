package workload

import (
	"strconv"
	"time"
)

// Text.

var (
	hostNames = []string{"web-01", "web-02", "web-03", "api-01", "api-02", "db-01", "db-02", "cache-01", "worker-01", "worker-02", "edge-01", "mq-01"}
	verbs     = []string{"GET", "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH"}
	urls      = []string{"/api/v1/accounts/", "/api/v1/orders/", "/api/v2/invoices/", "/api/v2/shipments/", "/assets/app.", "/images/catalog/", "/api/v1/basket/", "/health?check=", "/api/v2/find?term=", "/signin?return=/profile/", "/api/v1/tokens/", "/feeds/rss/"}
	codes     = []int{200, 200, 200, 200, 200, 200, 200, 201, 202, 204, 301, 302, 304, 304, 400, 401, 403, 404, 404, 409, 429, 500, 502, 503}
	clients   = []string{
		"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
		"Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
		"Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
		"curl/8.11.0", "Go-http-client/1.1", "okhttp/4.12.0", "kube-probe/1.31", "Wget/1.24.5",
	}
	apps      = []string{"ledger", "identity", "stock", "finder", "notifier", "cron", "checkout", "products", "reports", "gateway"}
	severity  = []string{"INFO", "INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR"}
	lowerSev  = []string{"info", "info", "info", "info", "info", "debug", "debug", "warn", "error"}
	actions   = []string{"order.placed", "order.shipped", "basket.changed", "session.opened", "session.renewed", "cache.evicted", "task.finished", "charge.settled", "mail.queued", "query.slow", "stock.reserved", "refund.issued"}
	summaries = []string{"request served", "retry scheduled after timeout", "peer closed the connection", "entry expired from cache", "throttled by rate limiter", "backend answered slowly", "lease acquired", "snapshot written", "no such account", "input rejected by schema", "batch committed", "replica caught up"}
	words     = []string{
		"the", "a", "of", "to", "and", "in", "for", "on", "with", "from", "after", "before", "while", "during",
		"request", "response", "client", "server", "session", "account", "order", "payment", "invoice", "item",
		"queue", "worker", "job", "task", "batch", "record", "row", "table", "index", "cache", "disk", "volume",
		"snapshot", "backup", "replica", "node", "cluster", "network", "socket", "stream", "file", "block",
		"started", "finished", "failed", "retried", "skipped", "queued", "written", "read", "flushed", "synced",
		"expired", "rotated", "loaded", "saved", "deleted", "updated", "created", "checked", "timed", "out",
	}
	kernelMsgs = [][]string{ // a number goes between the parts
		{"EXT4-fs (sda2): mounted filesystem with ordered data mode. Quota mode: none."},
		{"TCP: request_sock_TCP: Possible SYN flooding on port ", ". Sending cookies."},
		{"nf_conntrack: nf_conntrack: table full, dropping packet"},
		{"systemd[1]: Started session ", " of user backup."},
		{"CRON[", "]: (root) CMD (run-parts /etc/cron.hourly)"},
		{"sshd[", "]: Accepted publickey for ops from 10.20.", ".", " port ", " ssh2"},
		{"Out of memory: Killed process ", " (java) total-vm:", "kB, anon-rss:", "kB"},
		{"audit: type=1400 apparmor=\"DENIED\" operation=\"open\" pid=", " comm=\"nginx\""},
	}
)

const hexDigits = "0123456789abcdef"
const b64Digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

// textGen writes log text. Most of a line is repeated structure and about a
// quarter is hard to predict (ids, addresses, numbers), which makes it
// compress about as well as real logs.
type textGen struct {
	r      rng
	ms     int64  // timestamp of the current line, Unix milliseconds
	minute int64  // minute that prefix holds
	prefix []byte // "2006-01-02T15:04:" of minute
	pid    int
	line   []byte
}

func newTextGen(seed int64, tag, idx uint64, startMs int64) *textGen {
	g := new(textGen)
	g.reset(seed, tag, idx, startMs)
	return g
}

// reset starts g on a new stream, keeping its buffers.
func (g *textGen) reset(seed int64, tag, idx uint64, startMs int64) {
	g.r.seed(seed, tag, idx)
	g.ms = startMs
	g.minute = -1
	g.pid = 200 + int(streamKey(seed, tagPID, idx)%30000)
}

// fill fills p with lines, the last one cut at the end of p.
func (g *textGen) fill(p []byte) {
	for off := 0; off < len(p); {
		g.line = g.appendLine(g.line[:0])
		off += copy(p[off:], g.line)
	}
}

func (g *textGen) stamp(b []byte) []byte {
	if m := g.ms / 60000; m != g.minute {
		g.minute = m
		g.prefix = time.UnixMilli(m*60000).UTC().AppendFormat(g.prefix[:0], "2006-01-02T15:04:")
	}
	b = append(b, g.prefix...)
	in := g.ms % 60000
	s, ms := in/1000, in%1000
	return append(b, byte('0'+s/10), byte('0'+s%10), '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10), 'Z')
}

func (g *textGen) num(b []byte, n int) []byte {
	return strconv.AppendUint(b, uint64(g.r.intn(n)), 10)
}

func (g *textGen) hex(b []byte, n int) []byte {
	for n > 0 {
		v := g.r.next()
		for i := 0; i < 16 && n > 0; i, n = i+1, n-1 {
			b = append(b, hexDigits[v&15])
			v >>= 4
		}
	}
	return b
}

func (g *textGen) b64(b []byte, n int) []byte {
	for n > 0 {
		v := g.r.next()
		for i := 0; i < 10 && n > 0; i, n = i+1, n-1 {
			b = append(b, b64Digits[v&63])
			v >>= 6
		}
	}
	return b
}

func (g *textGen) addr(b []byte) []byte {
	b = append(b, "10."...)
	b = g.num(b, 8)
	b = append(b, '.')
	b = g.num(b, 256)
	b = append(b, '.')
	return g.num(b, 256)
}

func (g *textGen) word(b []byte, list []string) []byte {
	return append(b, list[g.r.intn(len(list))]...)
}

// appendLine appends one log line, ending in '\n'.
func (g *textGen) appendLine(b []byte) []byte {
	g.ms += int64(g.r.intn(30))
	b = g.stamp(b)
	b = append(b, ' ')
	b = g.word(b, hostNames)
	switch c := g.r.intn(100); {
	case c < 40: // web server access log
		b = append(b, " httpd["...)
		b = strconv.AppendInt(b, int64(g.pid), 10)
		b = append(b, "]: "...)
		b = g.addr(b)
		b = append(b, " \""...)
		b = g.word(b, verbs)
		b = append(b, ' ')
		b = g.word(b, urls)
		b = g.num(b, 200000)
		b = append(b, " HTTP/1.1\" "...)
		b = strconv.AppendInt(b, int64(codes[g.r.intn(len(codes))]), 10)
		b = append(b, " bytes="...)
		b = g.num(b, 80000)
		b = append(b, " time=0."...)
		b = g.num(b, 1000)
		b = append(b, " agent=\""...)
		b = g.word(b, clients)
		b = append(b, "\" id="...)
		b = g.hex(b, 24)
		b = append(b, " s="...)
		b = g.b64(b, 16)
	case c < 65: // application key=value log
		b = append(b, ' ')
		b = g.word(b, apps)
		b = append(b, '[')
		b = strconv.AppendInt(b, int64(g.pid+g.r.intn(6)), 10)
		b = append(b, "]: "...)
		b = g.word(b, severity)
		b = append(b, ' ')
		b = g.word(b, actions)
		b = append(b, " account="...)
		b = g.num(b, 5000000)
		b = append(b, " total="...)
		b = g.num(b, 50000)
		b = append(b, '.')
		b = g.num(b, 100)
		b = append(b, " currency=EUR elapsed_ms="...)
		b = g.num(b, 3000)
		b = append(b, " span="...)
		b = g.hex(b, 24)
	case c < 80: // JSON log
		b = append(b, " {\"level\":\""...)
		b = g.word(b, lowerSev)
		b = append(b, "\",\"app\":\""...)
		b = g.word(b, apps)
		b = append(b, "\",\"msg\":\""...)
		b = g.word(b, summaries)
		b = append(b, "\",\"account\":"...)
		b = g.num(b, 5000000)
		b = append(b, ",\"peer\":\""...)
		b = g.addr(b)
		b = append(b, "\",\"elapsed_ms\":"...)
		b = g.num(b, 8000)
		b = append(b, ",\"trace\":\""...)
		b = g.hex(b, 16)
		b = append(b, "\"}"...)
	case c < 92: // prose from the word list
		b = append(b, ' ')
		b = g.word(b, apps)
		b = append(b, ": "...)
		b = g.word(b, severity)
		for n := 4 + g.r.intn(12); n > 0; n-- {
			b = append(b, ' ')
			b = g.word(b, words)
		}
		b = append(b, " ("...)
		b = g.num(b, 100000)
		b = append(b, " items, attempt "...)
		b = g.num(b, 5)
		b = append(b, ')')
	default: // kernel log
		b = append(b, " kernel: ["...)
		b = strconv.AppendInt(b, g.ms/1000%1000000, 10)
		b = append(b, '.')
		b = g.num(b, 1000000)
		b = append(b, "] "...)
		for i, part := range kernelMsgs[g.r.intn(len(kernelMsgs))] {
			if i > 0 {
				b = g.num(b, 65536)
			}
			b = append(b, part...)
		}
	}
	return append(b, '\n')
}
