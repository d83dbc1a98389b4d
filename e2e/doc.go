// Package e2e holds the end-to-end suite: it builds the hal9-migrate binary
// and runs `hal9-migrate daemon` as a process against real components (a
// `git daemon` serving the plan repository, Debian's Prometheus, the Docker
// engine running the test service FROM scratch, nginx on the host), injects
// faults and hostile inputs, and checks what the daemon did to the
// workloads and what it wrote to Git, as an operator would see it. The
// Kubernetes variants (kubernetes_test.go) run the daemon against the test
// control plane of internal/k8stest and check the HTTPRoute's weights and
// the Deployments' replicas.
//
// Its tests are the product's promises, measured on the assembled binary;
// the packages' own tests check the parts. Nothing here is imported by the
// product.
package e2e
