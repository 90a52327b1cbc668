//go:build tools

// Package tools pins the Kubernetes command packages this module builds, so that
// `go mod tidy` keeps their dependencies: the control plane, and the node that
// `scripts/dev-cluster up --node` adds (kubelet, kube-proxy, kube-scheduler).
package tools

import (
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
