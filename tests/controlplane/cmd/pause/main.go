// Command pause is the pod sandbox of the dev node (scripts/dev-cluster up
// --node): the first process of every pod, holding the pod's namespaces while its
// containers come and go. Nothing can be pulled here, so containerd's sandbox
// image is this program, built with the node and imported into it.
//
// As PID 1 of the pod it reaps the zombies other processes leave it, and exits on
// SIGTERM or SIGINT, when the kubelet tears the sandbox down.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not PID 1, so orphans are not reaped here")
	}
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGCHLD, syscall.SIGTERM, syscall.SIGINT)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
