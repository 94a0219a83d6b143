// Command pause is the sandbox ("infra") container of every pod on the local node: it holds the pod's
// namespaces, reaps orphaned children, and exits on SIGINT/SIGTERM. It does what Kubernetes' own pause
// (build/pause/linux/pause.c) does, built from this module because no registry image can be pulled here.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
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
