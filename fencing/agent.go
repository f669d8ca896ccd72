package fencing

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
)

// AgentConfig configures an AgentFencer.
type AgentConfig struct {
	// Command is the fence agent's executable, for example
	// /usr/sbin/fence_ipmilan. Required.
	Command string
	// Args are extra command-line arguments. Fence agents normally take
	// everything on stdin, so this is usually empty.
	Args []string
	// Action is the action asked of the agent: "off" (default) or
	// "reboot". Both leave the victim unable to write.
	Action string
	// Options are further "key=value" lines written to the agent's stdin
	// (ipaddr, login, passwd, ...). Their values are never logged.
	Options map[string]string
	// PlugOptions are the option names that carry the victim's plug (the
	// name the agent knows it by). Default: "plug" and "port" (the older
	// name that fence-agents still accept).
	PlugOptions []string
	// Plugs maps a node name to its plug when they differ; by default the
	// plug is the node name.
	Plugs map[string]string
	// Timeout bounds one run of the agent; on expiry the agent's whole
	// process group is killed. Default 60s.
	Timeout time.Duration
	// MaxOutput bounds how many bytes of the agent's output are kept for
	// the log. Default 4096.
	MaxOutput int
	// Logger receives one line per run with exit code and output. Nil
	// discards.
	Logger hclog.Logger
}

// DefaultAgentConfig returns the defaults for command.
func DefaultAgentConfig(command string) AgentConfig {
	return AgentConfig{
		Command:     command,
		Action:      "off",
		PlugOptions: []string{"plug", "port"},
		Timeout:     60 * time.Second,
		MaxOutput:   4096,
	}
}

// Validate says which field is wrong.
func (c AgentConfig) Validate() error {
	switch {
	case c.Command == "":
		return fmt.Errorf("fencing: AgentConfig.Command is empty")
	case c.Action != "off" && c.Action != "reboot":
		return fmt.Errorf("fencing: AgentConfig.Action %q: want off or reboot", c.Action)
	case len(c.PlugOptions) == 0:
		return fmt.Errorf("fencing: AgentConfig.PlugOptions is empty")
	case c.Timeout <= 0:
		return fmt.Errorf("fencing: AgentConfig.Timeout %v must be positive", c.Timeout)
	case c.MaxOutput <= 0:
		return fmt.Errorf("fencing: AgentConfig.MaxOutput %d must be positive", c.MaxOutput)
	}
	for k, v := range c.Options {
		if k == "" || strings.ContainsAny(k, "=\n") || strings.Contains(v, "\n") {
			return fmt.Errorf("fencing: AgentConfig.Options[%q]: keys must be non-empty without '=' or newlines, values without newlines", k)
		}
	}
	return nil
}

// AgentFencer fences by running an external fence agent in the calling
// convention of the fence-agents package (and of Pacemaker's stonith):
// options as "key=value" lines on stdin, among them action=, nodename=
// and the plug; exit status 0 means the action was carried out.
type AgentFencer struct {
	cfg AgentConfig
	log hclog.Logger
}

// NewAgentFencer checks cfg and returns the fencer.
func NewAgentFencer(cfg AgentConfig) (*AgentFencer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &AgentFencer{cfg: cfg, log: log.With("agent", cfg.Command)}, nil
}

// Fence runs the agent with the configured action against victim.
func (a *AgentFencer) Fence(ctx context.Context, victim NodeRef) error {
	if victim.Name == "" {
		return fmt.Errorf("%w: victim has no name", ErrFenceFailed)
	}
	return a.Run(ctx, victim.Name, a.cfg.Action)
}

// Stdin returns the option lines the agent receives for node and action.
func (a *AgentFencer) Stdin(node, action string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "action=%s\n", action)
	fmt.Fprintf(&b, "nodename=%s\n", node)
	plug := node
	if p, ok := a.cfg.Plugs[node]; ok {
		plug = p
	}
	for _, o := range a.cfg.PlugOptions {
		fmt.Fprintf(&b, "%s=%s\n", o, plug)
	}
	for _, k := range slices.Sorted(maps.Keys(a.cfg.Options)) {
		fmt.Fprintf(&b, "%s=%s\n", k, a.cfg.Options[k])
	}
	return b.Bytes()
}

// errAgentDeadline is the cause of an agent's own timeout.
var errAgentDeadline = errors.New("fence agent deadline")

// Run runs the agent once with action against node. It returns nil on
// exit status 0, an error wrapping ErrAgentTimeout when the agent was
// killed at the timeout, and ErrFenceFailed otherwise.
func (a *AgentFencer) Run(ctx context.Context, node, action string) error {
	ctx, cancel := context.WithTimeoutCause(ctx, a.cfg.Timeout, errAgentDeadline)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.cfg.Command, a.cfg.Args...)
	cmd.Stdin = bytes.NewReader(a.Stdin(node, action))
	out := &limitedBuffer{max: a.cfg.MaxOutput}
	cmd.Stdout, cmd.Stderr = out, out
	// The agent may start children (ssh, ipmitool); kill them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	code := -1
	if cmd.ProcessState != nil {
		code = cmd.ProcessState.ExitCode()
	}
	kv := []any{"node", node, "action", action, "exit_code", code, "took", took, "output", out.String()}
	switch {
	case err == nil:
		a.log.Info("fence agent succeeded", kv...)
		return nil
	case errors.Is(context.Cause(ctx), errAgentDeadline):
		// The agent's own deadline, not its caller's, ended it: timed
		// by the context, since a time taken after the deadline was set
		// can fall just short of the timeout.
		a.log.Error("fence agent timed out and was killed", append(kv, "timeout", a.cfg.Timeout)...)
		return fmt.Errorf("%w: %w after %v: %s %s", ErrFenceFailed, ErrAgentTimeout, a.cfg.Timeout, action, node)
	default:
		a.log.Error("fence agent failed", append(kv, "error", err)...)
		return fmt.Errorf("%w: agent %s %s %s: exit code %d: %w", ErrFenceFailed, a.cfg.Command, action, node, code, err)
	}
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	max  int
	lost int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	room := l.max - l.buf.Len()
	if room > len(p) {
		room = len(p)
	}
	if room > 0 {
		l.buf.Write(p[:room])
	}
	l.lost += len(p) - max(room, 0)
	return len(p), nil
}

func (l *limitedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := strings.TrimSpace(l.buf.String())
	if l.lost > 0 {
		s += fmt.Sprintf(" ... (%d bytes more)", l.lost)
	}
	return s
}
