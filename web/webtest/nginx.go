package webtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrNoNginx: nginx is not installed (fixtures/setup.sh installs it).
var ErrNoNginx = errors.New("webtest: nginx is not installed")

// Nginx is a private nginx serving a directory on a loopback listener
// bound to port 0 by this process and handed over (nginx inherits
// listening sockets named in its NGINX environment variable; only a master
// process does that without crashing).
type Nginx struct {
	// URL is the base URL ("http://127.0.0.1:PORT", https for
	// StartNginxTLS).
	URL  string
	cmd  *exec.Cmd
	done chan struct{}
	dir  string
}

// NginxBinary finds Debian's nginx.
func NginxBinary() (string, error) {
	for _, p := range []string{"/usr/sbin/nginx", "nginx"} {
		if path, err := exec.LookPath(p); err == nil {
			return path, nil
		}
	}
	return "", ErrNoNginx
}

// StartNginx serves root with workers worker processes, HTTP/1.1, or only
// HTTP/2 over cleartext with prior knowledge when h2c is set, using dir for
// its configuration, logs and temporary files. Stop it with Stop.
func StartNginx(root, dir string, workers int, h2c bool) (*Nginx, error) {
	listen := ""
	if h2c {
		// nginx 1.22 (Debian 12) takes http2 as a listen parameter; on a
		// plain listener it speaks HTTP/2 with prior knowledge.
		listen = " http2"
	}
	return startNginx(root, dir, workers, listen, "", h2c)
}

// StartNginxTLS is StartNginx serving HTTPS: TLS 1.2 and 1.3 with the PEM
// certificate and key given, HTTP/2 by ALPN (HTTP/1.1 to a client that
// does not ask for it), nginx's default ciphers and session tickets. The
// URL is "https://127.0.0.1:PORT".
func StartNginxTLS(root, dir string, workers int, certFile, keyFile string) (*Nginx, error) {
	tls := fmt.Sprintf(`
		ssl_certificate %s;
		ssl_certificate_key %s;
		ssl_protocols TLSv1.2 TLSv1.3;`, certFile, keyFile)
	return startNginx(root, dir, workers, " ssl http2", tls, true)
}

// startNginx starts nginx with listen's parameters and extra server
// directives; rawReady: a TCP connection is the sign that it serves (for
// a listener that does not answer a plain HTTP/1.1 GET).
func startNginx(root, dir string, workers int, listen, extra string, rawReady bool) (*Nginx, error) {
	bin, err := NginxBinary()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	lf, err := ln.(*net.TCPListener).File()
	ln.Close()
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	user := ""
	if os.Geteuid() == 0 {
		// A root master would run its workers as nobody, who may not
		// read private directories.
		user = "user root;\n"
	}
	conf := user + fmt.Sprintf(`daemon off;
master_process on;
worker_processes %[4]d;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 1024; }
http {
	include /etc/nginx/mime.types;
	default_type application/octet-stream;
	access_log off;
	sendfile on;
	tcp_nopush on;
	keepalive_requests 1000000;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	server {
		listen %[2]s%[5]s;
		root %[3]s;
		index index.html;%[6]s
	}
}
`, dir, addr, root, workers, listen, extra)
	cf := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-c", cf, "-p", dir, "-e", filepath.Join(dir, "error.log"))
	cmd.ExtraFiles = []*os.File{lf} // fd 3
	cmd.Env = append(os.Environ(), "NGINX=3;")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	scheme := "http://"
	if strings.Contains(listen, "ssl") {
		scheme = "https://"
	}
	n := &Nginx{URL: scheme + addr, cmd: cmd, done: make(chan struct{}), dir: dir}
	go func() { cmd.Wait(); close(n.done) }()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-n.done:
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return nil, fmt.Errorf("webtest: nginx exited: %s %s", out.String(), log)
		default:
		}
		var err error
		if rawReady {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				return n, nil
			}
		} else {
			var resp *http.Response
			if resp, err = client.Get(n.URL + "/"); err == nil {
				resp.Body.Close()
				return n, nil
			}
		}
		if time.Now().After(deadline) {
			n.Stop()
			return nil, fmt.Errorf("webtest: nginx does not answer: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops nginx by its PID: SIGTERM (the master stops its workers and
// exits), SIGKILL after 5 s. It returns within about 6 s.
func (n *Nginx) Stop() error {
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
		return nil
	case <-time.After(5 * time.Second):
	}
	n.cmd.Process.Kill()
	select {
	case <-n.done:
	case <-time.After(time.Second):
	}
	return fmt.Errorf("webtest: nginx (pid %d) ignored SIGTERM", n.cmd.Process.Pid)
}

// CPUTime is the processor time (user and system) the nginx master and
// its workers have used so far, from /proc (Linux; clock ticks of 10 ms).
func (n *Nginx) CPUTime() (time.Duration, error) {
	pid := n.cmd.Process.Pid
	pids := []int{pid}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return 0, err
	}
	for _, f := range strings.Fields(string(b)) {
		c, err := strconv.Atoi(f)
		if err != nil {
			return 0, fmt.Errorf("webtest: /proc children list %q: %v", b, err)
		}
		pids = append(pids, c)
	}
	var total time.Duration
	for _, p := range pids {
		t, err := procCPU(p)
		if err != nil {
			return 0, err
		}
		total += t
	}
	return total, nil
}

// procCPU reads utime+stime of process pid from /proc/pid/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from
	// after its closing parenthesis; utime and stime are fields 14, 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("webtest: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("webtest: /proc/%d/stat: %d fields", pid, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("webtest: /proc/%d/stat: %v", pid, err)
		}
		ticks += v
	}
	const userHZ = 100 // USER_HZ, fixed at 100 on Linux for /proc
	return time.Duration(ticks) * time.Second / userHZ, nil
}
