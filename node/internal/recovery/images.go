package recovery

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/lifeboat-dr/lifeboat/blockstore"
	"github.com/lifeboat-dr/lifeboat/config"
	"github.com/lifeboat-dr/lifeboat/node/api"
	"github.com/lifeboat-dr/lifeboat/node/catalog"
)

// Failover and drill images on this node (issue 15 item 6). They live in
// DATA_DIR/failover/SERVICE/POINT12 and DATA_DIR/drills/SERVICE/DRILL_ID.
//
//   - A drill's images go when the drill ends, unless it was asked to
//     keep them (drill --keep); kept ones stay until drill --cleanup or
//     images rm.
//   - A service's failover images go once it has failed back: the last
//     failover brought it to its policy's primary site and is done. The
//     images it runs on there (the failback's own) stay.
//   - An image is in use, and nothing removes it, while the catalog says
//     the service runs on it at this site (the last failover is to this
//     site at its point, done or not), while a failover or a drill on
//     this node works in it.

// markBusy marks dir as in use (why) until the returned func is called.
func (e *Engine) markBusy(dir, why string) func() {
	e.mu.Lock()
	if e.busy == nil {
		e.busy = map[string]string{}
	}
	e.busy[dir] = why
	e.mu.Unlock()
	return func() {
		e.mu.Lock()
		delete(e.busy, dir)
		e.mu.Unlock()
	}
}

func (e *Engine) busyWhy(dir string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.busy[dir]
}

// Images lists this node's failover and drill images, by service, kind
// and name.
func (e *Engine) Images(ctx context.Context) ([]api.Image, error) {
	cat := e.o.Catalog.Catalog()
	var out []api.Image
	for _, kind := range []string{api.ImageFailover, api.ImageDrill} {
		root := filepath.Join(e.o.DataDir, kindDir(kind))
		svcs, err := os.ReadDir(root)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", root, err)
		}
		for _, sd := range svcs {
			if !sd.IsDir() {
				continue
			}
			ents, err := os.ReadDir(filepath.Join(root, sd.Name()))
			if err != nil {
				return nil, fmt.Errorf("list %s: %w", filepath.Join(root, sd.Name()), err)
			}
			for _, ent := range ents {
				if !ent.IsDir() {
					continue
				}
				if err := ctx.Err(); err != nil {
					return nil, err
				}
				out = append(out, e.describe(cat, sd.Name(), kind, ent.Name()))
			}
		}
	}
	slices.SortFunc(out, func(a, b api.Image) int { return strings.Compare(a.Ref(), b.Ref()) })
	if out == nil {
		out = []api.Image{}
	}
	return out, nil
}

func kindDir(kind string) string {
	if kind == api.ImageDrill {
		return "drills"
	}
	return "failover"
}

// describe reads one image directory and says whether it is in use.
func (e *Engine) describe(cat *catalog.Catalog, service, kind, name string) api.Image {
	dir := filepath.Join(e.o.DataDir, kindDir(kind), service, name)
	im := api.Image{Service: service, Kind: kind, Name: name, Path: dir}
	im.Size, im.Time = diskUsage(dir)
	if b, err := os.ReadFile(filepath.Join(dir, completeName)); err == nil {
		im.Point = strings.TrimSpace(string(b))
		if fi, err := os.Stat(filepath.Join(dir, completeName)); err == nil {
			im.Time = fi.ModTime().UTC()
		}
	}
	if why := e.busyWhy(dir); why != "" {
		im.InUse, im.Why = true, why
		return im
	}
	st := cat.Services[service]
	if kind == api.ImageDrill {
		im.Why = "left behind by a drill that did not finish"
		if st != nil {
			for _, d := range st.Drills {
				if d.ID == name && d.Node == e.o.Name {
					if im.Point == "" {
						im.Point = d.Point
					}
					if d.Dir != "" {
						im.Why = "kept by drill --keep (" + d.ID + ", by " + d.By + ")"
					}
				}
			}
		}
		return im
	}
	im.InUse, im.Why = failoverInUse(cat, string(e.o.Site), service, name)
	return im
}

// failoverInUse says whether the failover images of service named name
// (the point's first 12 characters) at site are what the service runs on,
// and why or why not, from the catalog.
func failoverInUse(cat *catalog.Catalog, site, service, name string) (bool, string) {
	st := cat.Services[service]
	last := st.LastFailover()
	if last == nil {
		return false, "the catalog records no failover of " + service
	}
	active := st.Active
	if active == "" {
		if p := policyService(cat, service); p != nil {
			active = p.Primary
		}
	}
	if last.To == site && active == site && shortID(last.Point) == name {
		if !last.Done {
			return true, fmt.Sprintf("the failover of %s to %s at epoch %d is not finished on these images", service, site, last.Epoch)
		}
		return true, fmt.Sprintf("%s runs at %s on these images (epoch %d)", service, site, last.Epoch)
	}
	if active == site {
		return false, fmt.Sprintf("%s runs at %s from other images (point %s, epoch %d)", service, site, shortID(last.Point), last.Epoch)
	}
	return false, fmt.Sprintf("%s runs at %s now (epoch %d)", service, active, st.Epoch)
}

// diskUsage returns the bytes allocated under dir and the newest
// modification time in it.
func diskUsage(dir string) (int64, time.Time) {
	var size int64
	var newest time.Time
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			size += st.Blocks * 512
		} else {
			size += fi.Size()
		}
		if fi.ModTime().After(newest) {
			newest = fi.ModTime()
		}
		return nil
	})
	return size, newest.UTC()
}

// RemoveImages removes the images named by refs (SERVICE/KIND/NAME, NAME
// also a unique prefix of the point's ID): all of them, or, when one is
// unknown or in use, none (ErrNotFound, api.ErrUnsafe naming why).
func (e *Engine) RemoveImages(ctx context.Context, refs []string, by string) ([]api.Image, error) {
	if len(refs) == 0 {
		return nil, fmt.Errorf("%w: name the images to remove as SERVICE/KIND/NAME (lifeboat images list shows them)", catalog.ErrBadCommand)
	}
	all, err := e.Images(ctx)
	if err != nil {
		return nil, err
	}
	var pick []api.Image
	var inUse []string
	for _, ref := range refs {
		im, err := findImage(all, ref)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(pick, func(p api.Image) bool { return p.Path == im.Path }) {
			continue
		}
		if im.InUse {
			inUse = append(inUse, fmt.Sprintf("%s: %s", im.Ref(), im.Why))
		}
		pick = append(pick, im)
	}
	if len(inUse) > 0 {
		return nil, fmt.Errorf("%w: images in use, nothing removed: %s", api.ErrUnsafe, strings.Join(inUse, "; "))
	}
	var done []api.Image
	for _, im := range pick {
		if err := e.removeImage(ctx, im); err != nil {
			return done, err
		}
		e.log.Info("images removed", "service", im.Service, "kind", im.Kind, "name", im.Name, "by", by)
		done = append(done, im)
	}
	return done, nil
}

// findImage resolves ref among all.
func findImage(all []api.Image, ref string) (api.Image, error) {
	parts := strings.Split(ref, "/")
	if len(parts) != 3 || parts[0] == "" || parts[2] == "" || (parts[1] != api.ImageFailover && parts[1] != api.ImageDrill) {
		return api.Image{}, fmt.Errorf("%w: image %q: want SERVICE/KIND/NAME with KIND failover or drill (lifeboat images list shows them)", catalog.ErrBadCommand, ref)
	}
	var found []api.Image
	for _, im := range all {
		if im.Service != parts[0] || im.Kind != parts[1] {
			continue
		}
		if im.Name == parts[2] {
			return im, nil
		}
		if len(parts[2]) >= 8 && strings.HasPrefix(im.Point, parts[2]) {
			found = append(found, im)
		}
	}
	switch len(found) {
	case 0:
		return api.Image{}, fmt.Errorf("%w: no image %s on this node (lifeboat images list shows them)", blockstore.ErrNotFound, ref)
	case 1:
		return found[0], nil
	}
	return api.Image{}, fmt.Errorf("%w: image %s matches %d images; name one by its NAME", catalog.ErrBadCommand, ref, len(found))
}

// removeImage removes one image directory; a kept drill's record loses
// its Dir.
func (e *Engine) removeImage(ctx context.Context, im api.Image) error {
	if err := os.RemoveAll(im.Path); err != nil {
		return fmt.Errorf("remove %s: %w", im.Path, err)
	}
	if im.Kind != api.ImageDrill {
		return nil
	}
	st := e.o.Catalog.Catalog().Services[im.Service]
	if st == nil {
		return nil
	}
	for _, d := range st.Drills {
		if d.ID == im.Name && d.Node == e.o.Name && d.Dir != "" {
			d.Dir = ""
			if err := e.o.Propose(ctx, &catalog.Command{Op: catalog.OpDrill, Drill: &d}); err != nil {
				return fmt.Errorf("images of drill %s removed, its record not updated: %w", d.ID, err)
			}
		}
	}
	return nil
}

// removeFailedBack removes the failover images of services that have
// failed back (see the top of this file) and returns what it removed.
func (e *Engine) removeFailedBack(ctx context.Context) []api.Image {
	cat := e.o.Catalog.Catalog()
	all, err := e.Images(ctx)
	if err != nil {
		e.warnOnce("images", "list failover images", err)
		return nil
	}
	var out []api.Image
	for _, im := range all {
		if im.Kind != api.ImageFailover || im.InUse || !failedBack(cat, im.Service) {
			continue
		}
		if err := os.RemoveAll(im.Path); err != nil {
			e.warnOnce(im.Path, "remove failover images of a service that failed back", err)
			continue
		}
		e.log.Info("failover images removed: the service failed back", "service", im.Service, "point", im.Name, "path", im.Path)
		out = append(out, im)
	}
	return out
}

// failedBack reports whether service's last failover brought it back to
// its policy's primary site and is done.
func failedBack(cat *catalog.Catalog, service string) bool {
	p := policyService(cat, service)
	st := cat.Services[service]
	last := st.LastFailover()
	if p == nil || last == nil || !last.Done || last.To != p.Primary {
		return false
	}
	return st.Active == "" || st.Active == p.Primary
}

// policyService is service as the applied policy has it (its primary is
// the policy's, not where it runs now), or nil.
func policyService(cat *catalog.Catalog, service string) *config.Service {
	if pc := cat.PolicyCluster(); pc != nil {
		return pc.Service(service)
	}
	return nil
}

func (e *Engine) warnOnce(key, msg string, err error) {
	e.mu.Lock()
	if e.warned == nil {
		e.warned = map[string]bool{}
	}
	seen := e.warned[key]
	e.warned[key] = true
	e.mu.Unlock()
	if !seen {
		e.log.Warn(msg, "err", err, "key", key)
	}
}

// Run removes the failover images of services that failed back, at start
// and on every catalog change, until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	type viewer interface {
		View() (*catalog.Catalog, <-chan struct{})
	}
	v, _ := e.o.Catalog.(viewer)
	for {
		var changed <-chan struct{}
		if v != nil {
			_, changed = v.View()
		}
		e.removeFailedBack(ctx)
		var tick <-chan time.Time
		if changed == nil {
			tick = e.o.Clock.After(time.Minute)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick:
		}
	}
}
