package kubernetes

import (
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
)

// TestOverlay walks the overlay through what the driver and the watch do
// to one Deployment: the read shows the newer of what the driver wrote and
// what the watch shows, a delete hides the object until the watch shows it
// gone or shows a new one, and a create shows before the watch does, for a
// while.
func TestOverlay(t *testing.T) {
	dep := func(uid types.UID, rv string) *appsv1.Deployment {
		return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "v2", UID: uid, ResourceVersion: rv}}
	}
	k := objKey{"deployments", "ns", "v2"}
	rvOf := func(o runtime.Object) string {
		if o == nil {
			return "none"
		}
		return o.(*appsv1.Deployment).ResourceVersion
	}
	o := overlay{m: map[objKey]written{}}
	check := func(what string, cached runtime.Object, want string) {
		t.Helper()
		if got := rvOf(o.newer(k, cached)); got != want {
			t.Errorf("%s: read %s, want %s", what, got, want)
		}
	}

	check("nothing written", dep("a", "5"), "5")
	o.put(dep("a", "10"), false)
	check("the watch behind the write", dep("a", "9"), "10")
	o.put(dep("a", "8"), false)
	check("a late answer to an older write", dep("a", "9"), "10")
	check("the watch caught up", dep("a", "11"), "11")
	check("the entry dropped once caught up", dep("a", "9"), "9")

	o.put(dep("a", "20"), false)
	o.seen("deployments", dep("a", "20"), false)
	check("an event as new as the write", dep("a", "19"), "19")

	o.put(dep("a", "30"), true)
	check("deleted, the watch behind", dep("a", "29"), "none")
	check("deleted, a new object of that name", dep("b", "31"), "31")
	o.put(dep("a", "30"), true)
	o.seen("deployments", dep("a", "30"), true)
	check("deleted, the watch said so", dep("a", "29"), "29")

	o.put(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "v2"}}, true)
	check("found gone without knowing its uid", dep("c", "40"), "none")

	o.put(dep("d", "50"), false)
	check("created, the watch behind", nil, "50")
	w := o.m[k]
	w.at = time.Now().Add(-2 * addTTL)
	o.m[k] = w
	check("created long ago, never shown by the watch", nil, "none")
	if len(o.m) != 0 {
		t.Errorf("the overlay keeps %d entries", len(o.m))
	}
}
