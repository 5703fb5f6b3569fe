// HTTPS server and client in Go's net/http and crypto/tls, for the eBPF
// TLS tests (built in the test with Debian's golang-go, stdlib only).
//
//	gotls server CERT KEY SLOW_MS [h2]   prints its port, serves until killed
//	gotls client PORT PATH N [h2]        N keep-alive GETs of PATH ({i}: 0..N-1)
//
// Both speak HTTP/1.1 only, or with "h2" HTTP/2 too (ALPN h2: net/http's
// own HTTP/2, which the client then must use). Routes as server.py's:
// /missing* 404, /fail* 500, /slow 200 after SLOW_MS, anything else 200.
package main

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	switch os.Args[1] {
	case "server":
		serve(os.Args[2], os.Args[3], os.Args[4], h2())
	case "client":
		n, _ := strconv.Atoi(os.Args[4])
		get(os.Args[2], os.Args[3], n, h2())
	}
}

func h2() bool {
	return os.Args[len(os.Args)-1] == "h2"
}

func serve(cert, key, slow string, h2 bool) {
	slowMs, _ := strconv.Atoi(slow)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println(ln.Addr().(*net.TCPAddr).Port)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status := 200
		switch {
		case strings.HasPrefix(r.URL.Path, "/missing"):
			status = 404
		case strings.HasPrefix(r.URL.Path, "/fail"):
			status = 500
		case r.URL.Path == "/slow":
			time.Sleep(time.Duration(slowMs) * time.Millisecond)
		}
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(status)
		w.Write([]byte("ok"))
	})
	srv := &http.Server{Handler: h}
	if !h2 {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	panic(srv.ServeTLS(ln, cert, key))
}

func get(port, path string, n int, h2 bool) {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: h2,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	c := &http.Client{Transport: tr}
	for i := 0; i < n; i++ {
		p := strings.ReplaceAll(path, "{i}", strconv.Itoa(i))
		r, err := c.Get("https://127.0.0.1:" + port + p)
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.ProtoMajor != map[bool]int{true: 2, false: 1}[h2] {
			panic("unexpected protocol " + r.Proto)
		}
	}
	fmt.Println("done")
}
