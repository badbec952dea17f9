// Command netprobe runs inside a test sandbox and tries one kind of network
// access, printing what happened, so the end-to-end tests can check what a
// sandbox reaches. Every attempt is bounded in time.
//
//	netprobe dns NAME           addresses, or "NXDOMAIN" / "ERROR ..."
//	netprobe http ADDR HOST     GET / with that Host header: the body, or "ERROR ..."
//	netprobe tls ADDR SNI       handshake (no verification), "CN=<subject>" and the body of GET /
//	netprobe https ADDR HOST [HEADER...]  GET / verified with the system's trust (as
//	                            any program in the sandbox): status and body, or "ERROR ..."
//	netprobe post ADDR HOST BODY [HEADER...]  plain-HTTP POST with that body
//	netprobe tcp ADDR           "CONNECTED <first line>" or "ERROR ..."
//	netprobe udp ADDR           one datagram: "REPLY <data>" or "ERROR ..."
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

const timeout = 3 * time.Second

func main() {
	if len(os.Args) < 3 {
		fmt.Println("ERROR usage")
		os.Exit(2)
	}
	out, err := probe(os.Args[1], os.Args[2:])
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println(out)
}

func probe(kind string, args []string) (string, error) {
	switch kind {
	case "dns":
		r := &net.Resolver{PreferGo: true}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		addrs, err := r.LookupHost(ctx, args[0])
		if dnsErr, ok := err.(*net.DNSError); ok && dnsErr.IsNotFound {
			return "NXDOMAIN", nil
		}
		if err != nil {
			return "", err
		}
		return strings.Join(addrs, " "), nil
	case "http":
		c, err := net.DialTimeout("tcp", args[0], timeout)
		if err != nil {
			return "", err
		}
		defer c.Close()
		return get(c, args[1])
	case "tls":
		c, err := net.DialTimeout("tcp", args[0], timeout)
		if err != nil {
			return "", err
		}
		defer c.Close()
		tc := tls.Client(c, &tls.Config{ServerName: args[1], InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			return "", err
		}
		cn := tc.ConnectionState().PeerCertificates[0].Subject.CommonName
		body, err := get(tc, args[1])
		return "CN=" + cn + " " + body, err
	case "https":
		c, err := net.DialTimeout("tcp", args[0], timeout)
		if err != nil {
			return "", err
		}
		defer c.Close()
		tc := tls.Client(c, &tls.Config{ServerName: args[1]}) // system roots: SSL_CERT_FILE and the usual paths
		tc.SetDeadline(time.Now().Add(timeout))
		if err := tc.Handshake(); err != nil {
			return "", err
		}
		return request(tc, "GET", args[1], "", args[2:])
	case "post":
		c, err := net.DialTimeout("tcp", args[0], timeout)
		if err != nil {
			return "", err
		}
		defer c.Close()
		return request(c, "POST", args[1], args[2], args[3:])
	case "tcp":
		c, err := net.DialTimeout("tcp", args[0], timeout)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		fmt.Fprintf(c, "ping\n")
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return "", err
		}
		return "CONNECTED " + strings.TrimSpace(line), nil
	case "udp":
		c, err := net.DialTimeout("udp", args[0], timeout)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte("ping")); err != nil {
			return "", err
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		if err != nil {
			return "", err
		}
		return "REPLY " + string(buf[:n]), nil
	}
	return "", fmt.Errorf("unknown probe %q", kind)
}

// request sends one request with extra header lines and returns "STATUS body".
func request(c net.Conn, method, host, body string, headers []string) (string, error) {
	c.SetDeadline(time.Now().Add(timeout))
	var b strings.Builder
	fmt.Fprintf(&b, "%s / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %d\r\n", method, host, len(body))
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("\r\n" + body)
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	resp, err := io.ReadAll(c)
	if err != nil && len(resp) == 0 {
		return "", err
	}
	s := string(resp)
	if s == "" {
		return "", io.EOF
	}
	first, rest, _ := strings.Cut(s, "\r\n")
	_, payload, _ := strings.Cut(rest, "\r\n\r\n")
	return first + " " + strings.TrimSpace(payload), nil
}

// get sends GET / with host and returns the response body.
func get(c net.Conn, host string) (string, error) {
	c.SetDeadline(time.Now().Add(timeout))
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	b, err := io.ReadAll(c)
	if err != nil && len(b) == 0 {
		return "", err
	}
	s := string(b)
	if i := strings.Index(s, "\r\n\r\n"); i >= 0 && strings.HasPrefix(s, "HTTP/1.1 200") {
		return strings.TrimSpace(s[i+4:]), nil
	}
	if s == "" {
		return "", io.EOF
	}
	first, _, _ := strings.Cut(s, "\r\n")
	return "", fmt.Errorf("response %q", first)
}
