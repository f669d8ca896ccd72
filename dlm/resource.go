package dlm

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Resource is what a lock protects: either a named resource, or a region
// (byte range [Start, End)) of a named volume. Two resources conflict only
// if they are the same named resource, or regions of the same volume whose
// ranges overlap.
type Resource struct {
	// Name is the named resource; empty for a region.
	Name string `json:"name,omitempty"`
	// Volume is the volume of a region lock; empty for a named resource.
	Volume string `json:"volume,omitempty"`
	// Start and End bound a region in bytes, End exclusive.
	Start uint64 `json:"start,omitempty"`
	End   uint64 `json:"end,omitempty"`
}

const maxNameLen = 200

// Named returns the named resource name.
func Named(name string) Resource { return Resource{Name: name} }

// Region returns the byte range [start, end) of volume.
func Region(volume string, start, end uint64) Resource {
	return Resource{Volume: volume, Start: start, End: end}
}

// IsRegion reports whether r is a region of a volume.
func (r Resource) IsRegion() bool { return r.Volume != "" }

// Validate says what is wrong with r, if anything.
func (r Resource) Validate() error {
	switch {
	case r.Name != "" && r.Volume != "":
		return fmt.Errorf("%w: both name %q and volume %q set", ErrBadResource, r.Name, r.Volume)
	case r.Name == "" && r.Volume == "":
		return fmt.Errorf("%w: empty name", ErrBadResource)
	case r.Name != "":
		if r.Start != 0 || r.End != 0 {
			return fmt.Errorf("%w: named resource %q has a byte range", ErrBadResource, r.Name)
		}
		return checkName("resource name", r.Name)
	default:
		if err := checkName("volume name", r.Volume); err != nil {
			return err
		}
		if r.End <= r.Start {
			return fmt.Errorf("%w: region %d-%d of volume %q is empty (end must exceed start)", ErrBadResource, r.Start, r.End, r.Volume)
		}
		return nil
	}
}

func checkName(what, s string) error {
	if len(s) > maxNameLen {
		return fmt.Errorf("%w: %s longer than %d bytes", ErrBadResource, what, maxNameLen)
	}
	for _, c := range s {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-/:", c)
		if !ok {
			return fmt.Errorf("%w: %s %q contains %q (allowed: letters, digits, . _ - / :)", ErrBadResource, what, s, c)
		}
	}
	return nil
}

// String is the canonical text form, accepted by ParseResource: the name
// of a named resource, or VOLUME@START-END for a region.
func (r Resource) String() string {
	if r.IsRegion() {
		// Built by hand: every Acquire names its resource, and a region
		// lock taken for each mirrored write made Sprintf show in profiles.
		b := make([]byte, 0, len(r.Volume)+42)
		b = append(b, r.Volume...)
		b = append(b, '@')
		b = strconv.AppendUint(b, r.Start, 10)
		b = append(b, '-')
		b = strconv.AppendUint(b, r.End, 10)
		return string(b)
	}
	return r.Name
}

// ParseResource reads the text form: NAME for a named resource, or
// VOLUME@START-END (bytes, END exclusive) for a region.
func ParseResource(s string) (Resource, error) {
	vol, rng, ok := strings.Cut(s, "@")
	if !ok {
		r := Named(s)
		return r, r.Validate()
	}
	a, b, ok := strings.Cut(rng, "-")
	if !ok {
		return Resource{}, fmt.Errorf("%w: region %q: want VOLUME@START-END", ErrBadResource, s)
	}
	start, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return Resource{}, fmt.Errorf("%w: region %q: bad start %q", ErrBadResource, s, a)
	}
	end, err := strconv.ParseUint(b, 10, 64)
	if err != nil {
		return Resource{}, fmt.Errorf("%w: region %q: bad end %q", ErrBadResource, s, b)
	}
	r := Region(vol, start, end)
	return r, r.Validate()
}

// space is the set of resources r can conflict with: one per named
// resource, one per volume.
func (r Resource) space() string {
	if r.IsRegion() {
		return "v:" + r.Volume
	}
	return "n:" + r.Name
}

// span returns the range r covers within its space.
func (r Resource) span() (uint64, uint64) {
	if r.IsRegion() {
		return r.Start, r.End
	}
	return 0, math.MaxUint64
}

// Overlaps reports whether r and o can conflict.
func (r Resource) Overlaps(o Resource) bool {
	if r.space() != o.space() {
		return false
	}
	a0, a1 := r.span()
	b0, b1 := o.span()
	return a0 < b1 && b0 < a1
}
