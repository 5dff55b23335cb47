package catalog

// LastVerified returns the mark of the service's most recently verified
// point, or nil (issue 16, verified points: status and metrics).
func (s *ServiceState) LastVerified() *PointMark {
	if s == nil {
		return nil
	}
	var last *PointMark
	for i := range s.Marks {
		m := &s.Marks[i]
		if m.Verified != nil && (last == nil || m.Verified.At.After(last.Verified.At)) {
			last = m
		}
	}
	return last
}
