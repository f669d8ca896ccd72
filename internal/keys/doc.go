// Package keys is the one map of Shoal's etcd keyspace: every key the
// cluster writes is spelled here, once, with the type of its value. Other
// packages build keys through a Space and never write a key segment of
// their own; TestContract checks this table, the Space methods and the
// rest of the module against each other.
//
// All keys live under a cluster's root P = "/shoal/<cluster_name>"
// (Cluster). The table (pattern, value, lifetime, writer):
//
//	P/members/NAME                     MemberRecord (JSON)            lease    cluster.Register, dlm.LeaseMember
//	P/coordinator/LEASE                "NAME/INCARNATION" (text)      lease    recovery.Coordinator (etcd election recipe)
//	P/recovery/NAME/INC                recovery.Record (JSON)         kept     recovery.EtcdStore (requests by every node)
//	P/fence/NAME/INC                   recovery.FenceRecord (JSON)    kept     recovery.EtcdStore, with the record's fence step
//	P/slots/NAME/INC                   bitmap slot, a JSON integer    kept     node (volume open), read by the recovery's resync
//	P/volumes/UUID/legs                etcdstate record (JSON)        kept     blockdev/mirror/etcdstate (leg table, CAS on revision)
//	P/dlm/req/NAME/INC/SEQ             dlm request (JSON)             lease    dlm (create revision = FIFO position)
//	P/dlm/lvb/RESOURCE                 dlm value block (JSON)         kept     dlm, by PW/EX holders on release
//	P/dlm/recovered/NAME/INC           dlm recovery release (JSON)    kept     dlm.Node.ReleaseDead
//	P/dlm/forced/NAME/INC/SEQ          dlm forced release (JSON)      kept     dlm.ForceRelease
//	P/dlm/checkpoint                   dlm replica checkpoint (gzip)  kept     dlm (periodic and on demand)
//	P/dlm/parts/REV/NAME/PART          dlm checkpoint part (bytes)    kept     dlm, a checkpoint too large for one value
//	P/dlm/want-checkpoint              dlm checkpoint request (text)  kept     dlm, by a reader whose history was compacted
//	P/probe                            never written                  -        cluster (a read that proves an external etcd serves)
//	P/store/...                        reserved for the store         -        store
//	P/web/...                          reserved for the web tier      -        web tier
//
// NAME is a member name, INC an incarnation id (hex), SEQ a 16-digit hex
// sequence, REV an etcd revision in 16 hex digits, PART a part number in 4
// decimal digits, LEASE an etcd lease id in hex, UUID a volume's uuid and
// RESOURCE a dlm resource name ("name" or "volume@start-end").
//
// Adding a key: add a Space method and a row to Table and to the table
// above; the contract test fails until all three agree.
//
//	ks := keys.Cluster("shoal")        // "/shoal/shoal"
//	k := ks.Member("node1")            // "/shoal/shoal/members/node1"
//	cli.Get(ctx, ks.Recoveries(), clientv3.WithPrefix())
package keys
