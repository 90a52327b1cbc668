// Command pki writes the keys and certificates the local test control plane needs:
// a CA, the apiserver's serving certificate for loopback (and for the addresses
// pods reach it at, given with -apiserver-ip), client certificates for the admin,
// the controller manager, the scheduler, the kubelet of node -node-name, kube-proxy
// and the apiserver's calls to the kubelet, serving certificates for the
// controller manager, the scheduler and the kubelet, and the service-account
// signing key pair.
//
// It exists so that scripts/dev-cluster needs nothing beyond the Go toolchain that
// builds the control plane anyway (no openssl). Files that already exist are kept,
// so running it again is harmless and a kubeconfig stays valid across restarts; a
// serving certificate that lacks an address asked for now is issued again.
package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const validity = 10 * 365 * 24 * time.Hour

func main() {
	dir := flag.String("dir", "", "directory to write the files into (required)")
	apiserverIPs := flag.String("apiserver-ip", "", "comma-separated addresses the apiserver is also reached at, besides loopback")
	nodeName := flag.String("node-name", "", "the node whose kubelet gets certificates (none without it)")
	nodeIP := flag.String("node-ip", "", "the address the kubelet serves on")
	flag.Parse()
	if *dir == "" {
		log.Fatal("--dir is required")
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		log.Fatal(err)
	}
	p := func(name string) string { return filepath.Join(*dir, name) }

	if !exists(p("sa.key")) {
		// Service-account tokens are signed with RS256, which needs an RSA key.
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		must(err)
		pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
		must(err)
		writePEM(p("sa.pub"), "PUBLIC KEY", pub)
		writeKey(p("sa.key"), k)
	}

	if !exists(p("ca.crt")) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: "anypost-dev-cluster-ca"},
			NotBefore:             time.Now().Add(-time.Hour),
			NotAfter:              time.Now().Add(validity),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
		must(err)
		writeKey(p("ca.key"), k)
		writePEM(p("ca.crt"), "CERTIFICATE", der)
	}
	ca, caKey := loadCA(p("ca.crt"), p("ca.key"))

	leaf := func(name string, subject pkix.Name, usage x509.ExtKeyUsage, ips []net.IP, dns []string) {
		if exists(p(name+".crt")) && coversIPs(p(name+".crt"), ips) {
			return
		}
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      subject,
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(validity),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, k.Public(), caKey)
		must(err)
		writeKey(p(name+".key"), k)
		writePEM(p(name+".crt"), "CERTIFICATE", der)
	}

	leaf("apiserver", pkix.Name{CommonName: "kube-apiserver"}, x509.ExtKeyUsageServerAuth,
		append([]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}, parseIPs(*apiserverIPs)...),
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	leaf("controller-manager-serving", pkix.Name{CommonName: "kube-controller-manager"}, x509.ExtKeyUsageServerAuth,
		[]net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	// system:masters: the dev cluster's admin and controller manager may do anything.
	leaf("admin", pkix.Name{CommonName: "anypost-dev-admin", Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, nil, nil)
	leaf("controller-manager", pkix.Name{CommonName: "system:kube-controller-manager", Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, nil, nil)

	// The node's parts, with the identities Kubernetes' default RBAC knows.
	leaf("scheduler-serving", pkix.Name{CommonName: "kube-scheduler"}, x509.ExtKeyUsageServerAuth,
		[]net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	leaf("scheduler", pkix.Name{CommonName: "system:kube-scheduler"}, x509.ExtKeyUsageClientAuth, nil, nil)
	leaf("kube-proxy", pkix.Name{CommonName: "system:kube-proxy"}, x509.ExtKeyUsageClientAuth, nil, nil)
	// The apiserver's identity towards kubelets (logs, exec, port-forward).
	leaf("apiserver-kubelet-client", pkix.Name{CommonName: "kube-apiserver-kubelet-client", Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, nil, nil)
	if *nodeName != "" {
		leaf("kubelet", pkix.Name{CommonName: "system:node:" + *nodeName, Organization: []string{"system:nodes"}},
			x509.ExtKeyUsageClientAuth, nil, nil)
		leaf("kubelet-serving", pkix.Name{CommonName: *nodeName}, x509.ExtKeyUsageServerAuth,
			append([]net.IP{net.ParseIP("127.0.0.1")}, parseIPs(*nodeIP)...), []string{*nodeName, "localhost"})
	}
}

func parseIPs(list string) []net.IP {
	var ips []net.IP
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		ip := net.ParseIP(s)
		if ip == nil {
			log.Fatalf("pki: %q is not an IP address", s)
		}
		ips = append(ips, ip)
	}
	return ips
}

// coversIPs tells whether the certificate at path names every address in ips.
func coversIPs(path string, ips []net.IP) bool {
	b, err := os.ReadFile(path)
	must(err)
	block, _ := pem.Decode(b)
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return false
	}
	for _, want := range ips {
		found := false
		for _, have := range cert.IPAddresses {
			if have.Equal(want) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func newKey() *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	return k
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	must(err)
	return n
}

func loadCA(certPath, keyPath string) (*x509.Certificate, crypto.Signer) {
	cb, err := os.ReadFile(certPath)
	must(err)
	kb, err := os.ReadFile(keyPath)
	must(err)
	cblock, _ := pem.Decode(cb)
	kblock, _ := pem.Decode(kb)
	if cblock == nil || kblock == nil {
		log.Fatalf("%s or %s is not PEM; delete both to regenerate", certPath, keyPath)
	}
	cert, err := x509.ParseCertificate(cblock.Bytes)
	must(err)
	key, err := x509.ParsePKCS8PrivateKey(kblock.Bytes)
	must(err)
	signer, ok := key.(crypto.Signer)
	if !ok {
		log.Fatalf("%s is not a signing key", keyPath)
	}
	return cert, signer
}

func writeKey(path string, k any) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	must(err)
	writePEM(path, "PRIVATE KEY", der)
}

func writePEM(path, typ string, der []byte) {
	data := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	tmp := path + ".tmp"
	must(os.WriteFile(tmp, data, 0o600))
	must(os.Rename(tmp, path))
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func must(err error) {
	if err != nil {
		log.Fatal(fmt.Errorf("pki: %w", err))
	}
}
