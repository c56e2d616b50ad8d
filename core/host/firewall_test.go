package host_test

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/fleetprov/fleetprov/core/host"
	"github.com/fleetprov/fleetprov/internal/fptest"
)

// TestListenHelper is not a test: the firewall test runs the test binary inside a network
// namespace as a TCP listener on the ports in FLEETPROV_LISTEN.
func TestListenHelper(t *testing.T) {
	ports := os.Getenv("FLEETPROV_LISTEN")
	if ports == "" {
		t.Skip("helper process only")
	}
	for _, p := range strings.Split(ports, ",") {
		l, err := net.Listen("tcp", ":"+p)
		if err != nil {
			fmt.Println("listen:", err)
			os.Exit(1)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
	}
	fmt.Println("ready")
	select {}
}

// The rendered ruleset, loaded by the real nft into a network namespace whose eth0 is one
// end of a veth pair: from the other end, an allowed WAN port answers, one that is not
// allowed is dropped (no answer at all, not a refusal), and deleting the table (a config
// without [network.firewall]) opens it again. Other tables are left alone.
func TestFirewallForReal(t *testing.T) {
	fptest.Need(t, os.Geteuid() == 0, "root (network namespaces and nftables)")
	ipBin := fptest.RequireTool(t, "iproute2", "ip")
	nftBin := fptest.RequireTool(t, "nftables", "nft")
	ns := fmt.Sprintf("fptest-fw-%d", os.Getpid())
	hostIf := fmt.Sprintf("fpfw%d", os.Getpid()%100000)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ipBin, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %v: %v\n%s", args, err, out)
		}
	}
	inNS := func(stdin []byte, args ...string) error {
		cmd := exec.Command(ipBin, append([]string{"netns", "exec", ns}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %w\n%s", args, err, out)
		}
		return nil
	}
	run("netns", "add", ns)
	t.Cleanup(func() { exec.Command(ipBin, "netns", "del", ns).Run() })
	run("link", "add", hostIf, "type", "veth", "peer", "name", "eth0", "netns", ns)
	t.Cleanup(func() { exec.Command(ipBin, "link", "del", hostIf).Run() })
	run("addr", "add", "10.231.7.1/30", "dev", hostIf)
	run("link", "set", hostIf, "up")
	for _, args := range [][]string{{"ip", "addr", "add", "10.231.7.2/30", "dev", "eth0"}, {"ip", "link", "set", "eth0", "up"}, {"ip", "link", "set", "lo", "up"}} {
		if err := inNS(nil, args...); err != nil {
			t.Fatal(err)
		}
	}
	// A table that is not ours, which must survive.
	if err := inNS([]byte("table inet image {\n\tchain c {\n\t}\n}\n"), nftBin, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	listener := exec.Command(ipBin, "netns", "exec", ns, self, "-test.run=^TestListenHelper$")
	listener.Env = append(os.Environ(), "FLEETPROV_LISTEN=8443,9000")
	out, _ := listener.StdoutPipe()
	if err := listener.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { listener.Process.Kill(); listener.Wait() })
	buf := make([]byte, 6)
	if _, err := out.Read(buf); err != nil || string(buf[:5]) != "ready" {
		t.Fatalf("listener: %q %v", buf, err)
	}
	answers := func(port int) error {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("10.231.7.2:%d", port), 2*time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	for _, p := range []int{8443, 9000} {
		if err := answers(p); err != nil {
			t.Fatalf("port %d before the firewall: %v", p, err)
		}
	}
	m := cfg(t, fmt.Sprintf("[users.admin]\nisAdmin = true\nssh_key = %q\n[network.firewall.inbound.wan]\ntcp = [8443]\n", keyA))
	d := host.Render(m, host.Options{})
	if err := inNS(d.Firewall, nftBin, "-c", "-f", "-"); err != nil {
		t.Fatalf("nft -c refuses the rendered ruleset: %v", err)
	}
	for i := 0; i < 2; i++ { // loading twice replaces the table (the script is idempotent)
		if err := inNS(d.Firewall, nftBin, "-f", "-"); err != nil {
			t.Fatalf("nft -f: %v", err)
		}
	}
	if err := answers(8443); err != nil {
		t.Errorf("the allowed WAN port 8443 does not answer: %v", err)
	}
	err := answers(9000)
	var ne net.Error
	if err == nil || !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("port 9000 (not allowed) = %v; want it dropped (a timeout, not a refusal)", err)
	}
	if err := inNS([]byte("table inet fleetprov\ndelete table inet fleetprov\n"), nftBin, "-f", "-"); err != nil {
		t.Fatal(err)
	}
	if err := answers(9000); err != nil {
		t.Errorf("port 9000 after the table was deleted: %v", err)
	}
	cmd := exec.Command(ipBin, "netns", "exec", ns, nftBin, "list", "tables")
	tables, _ := cmd.Output()
	if !strings.Contains(string(tables), "table inet image") || strings.Contains(string(tables), "fleetprov") {
		t.Errorf("tables after the delete:\n%s", tables)
	}
}
