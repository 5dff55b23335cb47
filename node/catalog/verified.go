package catalog

// VerifyNotChecked is the result shown for a point with no verification.
const VerifyNotChecked = "not checked"

// VerifiedOf returns the verification of point of service, or one whose
// Result is VerifyNotChecked.
func (c *Catalog) VerifiedOf(service, point string) Verification {
	if m, ok := c.Services[service].Mark(point); ok && m.Verified != nil {
		return *m.Verified
	}
	return Verification{Result: VerifyNotChecked}
}

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
