"""The Kubernetes test cluster: a real API server, controller manager, scheduler and etcd built from
the Go module proxy, with KWOK's fake nodes labelled by zone."""
