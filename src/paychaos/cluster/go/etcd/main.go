// etcd for the test cluster: `go install go.etcd.io/etcd/server/v3` fails on the replace
// directives of etcd's own go.mod, so this module builds the same entry point from the proxy.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
