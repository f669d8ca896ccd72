package cluster

import (
	"reflect"
	"sort"
	"strings"
)

// liveFields are the configuration fields a running node applies when it
// reloads its configuration (SIGHUP); every other field needs a restart.
// log_level: the node's logger changes level at once.
var liveFields = map[string]bool{
	"log_level": true,
}

// ReloadPlan compares the running configuration with a newly loaded one
// and names, by their file names ("log_level", "lease.ttl"), the fields
// that differ: live ones the node applies at once, restart ones only take
// effect after a restart. Both lists are sorted; both are empty when
// nothing changed. The Logger field is not part of the file and is never
// compared.
func ReloadPlan(running, next Config) (live, restart []string) {
	for _, f := range changedFields(reflect.ValueOf(running), reflect.ValueOf(next), "") {
		if liveFields[f] {
			live = append(live, f)
		} else {
			restart = append(restart, f)
		}
	}
	sort.Strings(live)
	sort.Strings(restart)
	return live, restart
}

// changedFields walks two values of the same struct type and returns the
// file names of the leaf fields that differ.
func changedFields(a, b reflect.Value, prefix string) []string {
	var out []string
	t := a.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name := ""
		if tag, ok := f.Tag.Lookup("hcl"); ok {
			name, _, _ = strings.Cut(tag, ",")
		} else if f.Type.Kind() == reflect.Struct {
			name = strings.ToLower(f.Name) // a block: etcd, tls, lease, admin, volume
		} else {
			continue // not read from the file (Logger)
		}
		full := name
		if prefix != "" {
			full = prefix + "." + name
		}
		av, bv := a.Field(i), b.Field(i)
		if f.Type.Kind() == reflect.Struct {
			if _, tagged := f.Tag.Lookup("hcl"); !tagged {
				out = append(out, changedFields(av, bv, full)...)
				continue
			}
		}
		if !reflect.DeepEqual(av.Interface(), bv.Interface()) {
			out = append(out, full)
		}
	}
	return out
}
