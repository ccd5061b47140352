// Command labapp is the test workload of the kuberevive lab.
//
//	labapp serve [-addr :8080]          HTTP server: GET / answers "labapp pod=<pod> node=<node>"
//	labapp apicaller [-interval 5s]     calls the Kubernetes API with the pod's ServiceAccount token
//	                                    and logs one line per call: "apicaller ok ..." or "apicaller fail ..."
//
// The apicaller reads the projected token on every call (the kubelet rotates it), lists the pods of
// its own namespace through the in-cluster endpoint (KUBERNETES_SERVICE_HOST/PORT; the lab has no DNS)
// and also serves its last result on -addr (GET /status), so tests can read it without logs.
// Standard library only; built static (CGO_ENABLED=0) by lab/build-binaries.sh.
package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: labapp serve|apicaller [flags]")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "serve":
		fs := flag.NewFlagSet("serve", flag.ExitOnError)
		addr := fs.String("addr", ":8080", "listen address")
		_ = fs.Parse(os.Args[2:])
		serve(*addr)
	case "apicaller":
		fs := flag.NewFlagSet("apicaller", flag.ExitOnError)
		interval := fs.Duration("interval", 5*time.Second, "time between two API calls")
		addr := fs.String("addr", ":8080", "listen address of GET /status")
		_ = fs.Parse(os.Args[2:])
		apicaller(*interval, *addr)
	default:
		fmt.Fprintf(os.Stderr, "labapp: unknown mode %q (want serve or apicaller)\n", os.Args[1])
		os.Exit(2)
	}
}

func identity() string {
	return fmt.Sprintf("pod=%s node=%s", os.Getenv("POD_NAME"), os.Getenv("NODE_NAME"))
}

func serve(addr string) {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		_, _ = fmt.Fprintf(w, "labapp %s\n", identity())
	})
	log.Printf("serve %s listening on %s", identity(), addr)
	log.Fatal(http.ListenAndServe(addr, mux))
}

type status struct {
	mu   sync.Mutex
	line string
}

func (s *status) set(line string) { s.mu.Lock(); s.line = line; s.mu.Unlock() }
func (s *status) get() string     { s.mu.Lock(); defer s.mu.Unlock(); return s.line }

func apicaller(interval time.Duration, addr string) {
	st := &status{line: "apicaller starting"}
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, st.get()+"\n") })
	go func() { log.Fatal(http.ListenAndServe(addr, mux)) }()
	log.Printf("apicaller %s calling the API every %s", identity(), interval)
	for {
		line := callOnce()
		st.set(line)
		log.Print(line)
		time.Sleep(interval)
	}
}

func callOnce() string {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return "apicaller fail reason=no-KUBERNETES_SERVICE_HOST"
	}
	token, err := os.ReadFile(saDir + "/token")
	if err != nil {
		return "apicaller fail reason=read-token err=" + oneLine(err.Error())
	}
	caPEM, err := os.ReadFile(saDir + "/ca.crt")
	if err != nil {
		return "apicaller fail reason=read-ca err=" + oneLine(err.Error())
	}
	ns, _ := os.ReadFile(saDir + "/namespace")
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return "apicaller fail reason=bad-ca"
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true},
	}
	url := fmt.Sprintf("https://%s/api/v1/namespaces/%s/pods?limit=1", net.JoinHostPort(host, port), strings.TrimSpace(string(ns)))
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return "apicaller fail reason=request err=" + oneLine(err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	resp, err := client.Do(req)
	if err != nil {
		return "apicaller fail reason=transport err=" + oneLine(err.Error())
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("apicaller fail reason=http status=%d", resp.StatusCode)
	}
	return fmt.Sprintf("apicaller ok status=%d", resp.StatusCode)
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
