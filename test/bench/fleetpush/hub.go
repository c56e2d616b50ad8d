package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fleetprov/fleetprov/messaging/natsauth"
)

// hubServer is the fleet's hub: the embedded one (broker.Broker) or a stock nats-server
// process (-hub-bin), whose memory and CPU are then its own.
type hubServer interface {
	ClientURL() string
	LeafURL() string
	LeafNodes() int
	SlowConsumers() int64
	Shutdown()
}

// stockHub is nats-server run with the hub.conf 'publisher nats init' writes.
type stockHub struct {
	cmd                 *exec.Cmd
	client, leaf, monit int
}

// startStockHub saves f's hub.conf in dir on free ports and runs bin with it.
func startStockHub(bin, dir string, f *natsauth.Fleet) (*stockHub, error) {
	ports := make([]int, 3)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close()
	}
	h := &stockHub{client: ports[0], leaf: ports[1], monit: ports[2]}
	if err := f.Save(dir, "127.0.0.1:"+strconv.Itoa(h.client), "127.0.0.1:"+strconv.Itoa(h.leaf)); err != nil {
		return nil, err
	}
	h.cmd = exec.Command(bin, "-c", filepath.Join(dir, natsauth.HubConfFile), "-m", strconv.Itoa(h.monit))
	// Its log (one line per leaf connection) is not kept: Stdout and Stderr stay nil.
	if err := h.cmd.Start(); err != nil {
		return nil, err
	}
	for range 100 {
		if _, err := h.varz(); err == nil {
			return h, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	h.Shutdown()
	return nil, fmt.Errorf("%s did not come up", bin)
}

func (h *stockHub) ClientURL() string { return "nats://127.0.0.1:" + strconv.Itoa(h.client) }
func (h *stockHub) LeafURL() string   { return "nats-leaf://127.0.0.1:" + strconv.Itoa(h.leaf) }

type varz struct {
	Leafs         int   `json:"leafnodes"`
	SlowConsumers int64 `json:"slow_consumers"`
}

func (h *stockHub) varz() (varz, error) {
	var v varz
	r, err := http.Get("http://127.0.0.1:" + strconv.Itoa(h.monit) + "/varz")
	if err != nil {
		return v, err
	}
	defer r.Body.Close()
	return v, json.NewDecoder(r.Body).Decode(&v)
}

func (h *stockHub) LeafNodes() int {
	v, _ := h.varz()
	return v.Leafs
}

func (h *stockHub) SlowConsumers() int64 {
	v, _ := h.varz()
	return v.SlowConsumers
}

func (h *stockHub) Shutdown() {
	if h.cmd != nil && h.cmd.Process != nil {
		h.cmd.Process.Signal(os.Interrupt)
		h.cmd.Wait()
	}
}

// usage is the hub process's resident and peak memory and CPU time so far.
func (h *stockHub) usage() string {
	pid := strconv.Itoa(h.cmd.Process.Pid)
	st, _ := os.ReadFile("/proc/" + pid + "/status")
	var rss, hwm string
	for _, l := range strings.Split(string(st), "\n") {
		switch f := strings.Fields(l); {
		case len(f) > 1 && f[0] == "VmRSS:":
			rss = f[1] + " kB"
		case len(f) > 1 && f[0] == "VmHWM:":
			hwm = f[1] + " kB"
		}
	}
	// utime and stime, fields 14 and 15 of /proc/pid/stat (after the command's ")").
	stat, _ := os.ReadFile("/proc/" + pid + "/stat")
	var cpu float64
	if i := strings.LastIndexByte(string(stat), ')'); i > 0 {
		if f := strings.Fields(string(stat)[i+1:]); len(f) > 13 {
			u, _ := strconv.ParseFloat(f[11], 64)
			s, _ := strconv.ParseFloat(f[12], 64)
			cpu = (u + s) / 100 // USER_HZ
		}
	}
	return fmt.Sprintf("hub RSS %s (peak %s), hub CPU %.2fs", rss, hwm, cpu)
}
