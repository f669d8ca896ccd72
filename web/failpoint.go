package web

// Point names a place on a mutating request's path where tests kill the
// node (Config.Failpoint).
type Point string

// The points of a mutating request's path, in order. The operation's effect
// and its stored response commit in one transaction, so "after the apply"
// and "after the response is stored" are one point.
const (
	// BeforeIntent: the request is parsed; nothing is journaled.
	BeforeIntent Point = "before-intent"
	// AfterIntent: the intent and the key record "in progress" committed;
	// nothing is applied.
	AfterIntent Point = "after-intent"
	// AfterApply: the effect and the stored response committed.
	AfterApply Point = "after-apply"
	// BeforeAnswer: the answer is ready to be written.
	BeforeAnswer Point = "before-answer"
)

// Points lists the points in path order.
var Points = []Point{BeforeIntent, AfterIntent, AfterApply, BeforeAnswer}
