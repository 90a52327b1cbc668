// Command pki writes the keys and certificates the local test control plane needs:
// a CA, the apiserver's serving certificate for loopback, client certificates for
// the admin and the controller manager, and the service-account signing key pair.
//
// It exists so that scripts/dev-cluster needs nothing beyond the Go toolchain that
// builds the control plane anyway (no openssl). Files that already exist are kept,
// so running it again is harmless and a kubeconfig stays valid across restarts.
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
	"time"
)

const validity = 10 * 365 * 24 * time.Hour

func main() {
	dir := flag.String("dir", "", "directory to write the files into (required)")
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
		if exists(p(name + ".crt")) {
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
		[]net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"})
	leaf("controller-manager-serving", pkix.Name{CommonName: "kube-controller-manager"}, x509.ExtKeyUsageServerAuth,
		[]net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost"})
	// system:masters: the dev cluster's admin and controller manager may do anything.
	leaf("admin", pkix.Name{CommonName: "anypost-dev-admin", Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, nil, nil)
	leaf("controller-manager", pkix.Name{CommonName: "system:kube-controller-manager", Organization: []string{"system:masters"}},
		x509.ExtKeyUsageClientAuth, nil, nil)
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
