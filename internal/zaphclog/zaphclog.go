// Package zaphclog hands the log entries of components that log through
// zap (the embedded etcd member) to an hclog.Logger, so a process has one
// log stream with one format. etcd's warnings that only repeat that the
// machine is slow or that a peer is down are let through once a minute
// with a count of the ones logged at debug in between (noiseRules); a few
// that are never actionable for Shoal go to debug; errors pass unchanged.
package zaphclog

import (
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/zap/zapcore"

	"github.com/shoal-ha/shoal/internal/clock"
)

// hclogCore is a zapcore.Core writing to hclog.
type hclogCore struct {
	log    hclog.Logger
	min    hclog.Level
	quiet  *atomic.Bool
	noise  *noiseFilter
	fields []any
}

// NewCore forwards entries at min and above to log; once quiet is set
// (the component is being stopped on purpose) the shutdown noise is
// dropped. quiet may be nil.
func NewCore(log hclog.Logger, min hclog.Level, quiet *atomic.Bool) zapcore.Core {
	if quiet == nil {
		quiet = new(atomic.Bool)
	}
	return &hclogCore{log: log, min: min, quiet: quiet, noise: newNoiseFilter(clock.Real(), NoiseWindow)}
}

func (c *hclogCore) Enabled(l zapcore.Level) bool {
	return zapToHclog(l) >= c.min && !c.quiet.Load()
}

func (c *hclogCore) With(fields []zapcore.Field) zapcore.Core {
	return &hclogCore{log: c.log, min: c.min, quiet: c.quiet, noise: c.noise, fields: append(append([]any(nil), c.fields...), encodeFields(fields)...)}
}

func (c *hclogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c *hclogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	args := append(append([]any(nil), c.fields...), encodeFields(fields)...)
	errField := ""
	for i := 0; i+1 < len(args); i += 2 {
		if k, _ := args[i].(string); k == "error" {
			errField, _ = args[i+1].(string)
		}
	}
	level, more := c.noise.decide(zapToHclog(e.Level), e.Message, errField)
	if more > 0 {
		args = append(args, "repeated_since_last", more, "repeats_logged_at", "debug")
	}
	c.log.Log(level, e.Message, args...)
	return nil
}

func (c *hclogCore) Sync() error { return nil }

func encodeFields(fields []zapcore.Field) []any {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, k, v)
	}
	return out
}

func zapToHclog(l zapcore.Level) hclog.Level {
	switch {
	case l < zapcore.InfoLevel:
		return hclog.Debug
	case l == zapcore.InfoLevel:
		return hclog.Info
	case l == zapcore.WarnLevel:
		return hclog.Warn
	default:
		return hclog.Error
	}
}
