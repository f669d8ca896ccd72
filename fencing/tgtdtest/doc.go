// Package tgtdtest holds the tests of reservation fencing and the
// recovery order against real tgtd targets, reached through Shoal's own
// iSCSI initiator, with a real embedded etcd. It has no code of its own;
// it is a separate package so that fencing itself does not depend on the
// initiator or the target rig.
package tgtdtest
