// Package tgtdtest holds the tests of fencing and the recovery order
// with real processes and real targets: tgtd legs reached through Shoal's
// own iSCSI initiator, file legs, and an embedded etcd. A node under test
// is this test binary run again as a child process, so that it can be
// SIGSTOPped, SIGCONTed and SIGKILLed. It has no code of its own; it is a
// separate package so that fencing itself does not depend on the
// initiator or the target rig.
package tgtdtest
